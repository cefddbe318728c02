"""``reram``: ReSNA's design space (cells, crossbars, ADCs, operating point) as a :class:`Problem`.

Design variables (rounded before evaluation):

| # | variable | values |
| --- | --- | --- |
| 0 | cell bits c | 1..7 (int8 magnitudes cut into ``ceil(7 / c)`` slices) |
| 1 | log2 crossbar size | 5..7 (32x32, 64x64, 128x128 tiles: rows = cols) |
| 2 | ADC bits N | 3..12 (every slice, saturating; an ADC wider than the lossless width L is built L bits wide) |
| 3 | log2 frequency / 1 GHz | -3..2 (125, 250, 500, 1000, 2000, 4000 MHz read clock) |
| 4 | temperature (K) | 300, 325, 350, 375, 400 (categorical) |

Inputs are fed through a 1-bit DAC (7 chunks). The ADCs saturate (clamp the column sum to their
range, the bit-slice paper's setting). The ``scaled`` mode (keep the top N of L bits) is not in the
space: in a trial at 4-bit ADCs on 64-row tiles it left every cell width tried (1, 2, 4, 7 bits) at
chance (error 0.86-0.89), where saturating ADCs gave 0.095-0.11 with 1- and 2-bit cells.

Objectives (all minimized), per image of the model on the design's chip:

* **error**: ``1 - top-1`` on the first :attr:`ReramSetup.test_images` test images, on one simulated
  noisy chip (programming variation, read noise at the operating point, RTN; chip seed = the problem's
  seed, the same chip draws for every design: common random numbers) of a ResNet-20 trained with
  ReSNA (fresh device noise at every step, on the noise-free weights) at the design's cell bits and
  operating point;
* **area** (mm^2), **latency** (us) and **energy** (uJ): ``vitforge.sw.reram.cost.network_cost``
  (NeuroSim's SAR ADC and the cell array) at the design's tile, ADC bits and operating point.

The model (:data:`MODEL`): ResNet-20 with 4 base channels (17k crossbar weights, per-tensor int8
scales) on the default data (``digits_canvas(seed, train_copies=1, canvas=16)``: 1,348 training and
449 test images) average-pooled to 8x8, the digits' own resolution. Training, at fidelity ``s``:
``s x ReramSetup.float_epochs`` (6) epochs of float pretraining (``vitforge.sw.reram.train.train``,
method ``plain``, shared by every design: cached per step count), then ``s x
ReramSetup.resna_epochs`` (1) epochs of
ReSNA's noisy fine-tuning at the design's cell bits and operating point (cached per cell bits,
operating point and step count). Programming variation is :data:`PROG_VARIATION` of the conductance
range, ``PROG_VARIATION x (2^c - 1)`` level steps: a fixed physical spread, so a cell holding more
levels holds them closer together.

Cost ``c(s) = max(s, MIN_FIDELITY) + EVAL_COST``: training time is proportional to the epochs, the
chip evaluation is paid at every fidelity.

Temperature only adds noise and ADC energy in these models, so the coolest design always wins:
it is in the space because ReSNA's is, not because it trades. Frequency trades: a faster read
clock shortens the array's pulses (less latency and array energy) and raises the read noise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import math
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .diskcache import JsonCache
from .problem import Problem

#: Bounds of the design variables (see the module docstring).
CELL_BITS = (1, 7)
SIZE_LOG2 = (5, 7)
ADC_BITS = (3, 12)
ADC_MODE = "saturate"
FREQ_LOG2_GHZ = (-3, 2)
TEMPERATURES_K = (300.0, 325.0, 350.0, 375.0, 400.0)
VARIABLES = ("cell bits", "log2 crossbar size", "ADC bits", "log2 frequency (GHz)", "temperature (K)")
OBJECTIVES = ("error", "area (mm^2)", "latency (us)", "energy (uJ)")

#: The model trained for the chips: ResNet-20, 4 base channels, on 8x8 images (pooled from the 16x16 canvas).
MODEL = {"kind": "resnet20", "channels": 4, "image_size": 8}
CANVAS = 16
POOL = CANVAS // MODEL["image_size"]
#: Programming variation as a fraction of the conductance range (a fixed physical spread).
PROG_VARIATION = 0.005
#: Lowest fidelity a multi-fidelity optimizer may choose, and the evaluation's share of the cost.
MIN_FIDELITY = 0.1
EVAL_COST = 0.2
#: Reference point margin over the worst cost in the space.
REF_MARGIN = 1.1
GHZ = 1e9
UM2_PER_MM2, NS_PER_US, PJ_PER_UJ = 1e6, 1e3, 1e6


@dataclass(frozen=True)
class ReramSetup:
    """How much training and evaluation one design gets at the top fidelity.

    Attributes:
        float_epochs: float pretraining epochs at ``s = 1`` (shared by every design).
        resna_epochs: ReSNA noisy fine-tuning epochs at ``s = 1`` (per cell bits and operating point).
        test_images: the first N test images the chip is evaluated on.
        max_train: the first N training images (None: all 1,348).
        lr: AdamW learning rate of the float stage (ReSNA's stage uses ``lr / 4``, as ``train``'s int8 stage).
        batch_size: images per step.
    """

    float_epochs: float = 6.0
    resna_epochs: float = 1.0
    test_images: int = 200
    max_train: int | None = None
    lr: float = 3e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("float_epochs", "resna_epochs", "lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, not {v!r}")
        for name in ("test_images", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if self.max_train is not None and (isinstance(self.max_train, bool) or not isinstance(self.max_train, int)
                                           or self.max_train < 2):
            raise ValueError(f"max_train must be an integer >= 2 or None, not {self.max_train!r}")


@dataclass(frozen=True)
class Design:
    """One rounded design point (see the module docstring's table)."""

    cell_bits: int
    size: int
    adc_bits: int
    frequency_hz: float
    temperature_k: float

    @classmethod
    def from_row(cls, row: np.ndarray) -> Design:
        """A design from one rounded row ``(5,)`` of the problem's ``x``.

        Raises:
            ValueError: naming the first variable outside its values.
        """
        row = np.asarray(row, dtype=np.float64)
        if row.shape != (len(VARIABLES),):
            raise ValueError(f"a reram design has {len(VARIABLES)} variables {VARIABLES}, not shape {row.shape}")
        checks = [(CELL_BITS, row[0]), (SIZE_LOG2, row[1]), (ADC_BITS, row[2]), (FREQ_LOG2_GHZ, row[3])]
        for name, ((lo, hi), v) in zip(VARIABLES, checks, strict=False):
            if not (math.isfinite(v) and v == round(v) and lo <= v <= hi):
                raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {float(v):g}")
        if float(row[4]) not in TEMPERATURES_K:
            raise ValueError(f"temperature must be one of {TEMPERATURES_K} K, not {float(row[4]):g}")
        return cls(int(row[0]), 1 << int(row[1]), int(row[2]), GHZ * 2.0 ** int(row[3]), float(row[4]))

    def crossbar(self):
        """The design's ``CrossbarConfig`` (ADC bits capped at the lossless width L; L bits: lossless)."""
        from vitforge.quant.crossbar.config import CrossbarConfig, lossless_adc_bits

        lossless = lossless_adc_bits(self.size, self.cell_bits, 1)
        bits = None if self.adc_bits >= lossless else self.adc_bits
        return CrossbarConfig(rows=self.size, cols=self.size, cell_bits=self.cell_bits, adc_bits=bits,
                              adc_mode=ADC_MODE, prog_sigma=PROG_VARIATION * ((1 << self.cell_bits) - 1))

    def op(self):
        from vitforge.sw.reram.device import OperatingPoint

        return OperatingPoint(self.frequency_hz, self.temperature_k)


def steps_at(epochs: float, fidelity: float, n_train: int, batch_size: int) -> int:
    """Optimizer steps of ``fidelity x epochs`` epochs over ``n_train`` images (at least one)."""
    return max(1, round(fidelity * epochs * math.ceil(n_train / batch_size)))


_FLOAT: dict = {}
_RESNA: dict = {}
_ERR: dict = {}
_LOCK = threading.Lock()


def clear_memory_cache() -> None:
    """Forget this process's trained models and errors (the JSON cache stays)."""
    with _LOCK:
        _FLOAT.clear()
        _RESNA.clear()
        _ERR.clear()


def cache_sizes() -> dict[str, int]:
    """How many float-pretrained models, ReSNA models and errors this process holds in memory."""
    with _LOCK:
        return {"float": len(_FLOAT), "resna": len(_RESNA), "errors": len(_ERR)}


class ReramObjectives:
    """``f(x, s)`` of the reram space (picklable; caches live in the module, per process)."""

    def __init__(self, seed: int, cache_dir: str | None, setup: ReramSetup) -> None:
        self.seed = seed
        self.cache_dir = cache_dir
        self._disk = JsonCache(None if cache_dir is None else Path(cache_dir) / f"reram_err_seed{seed}.json")
        self.setup = setup
        self._data = None
        self._geometry = None

    # -- data and model ---------------------------------------------------------------------------
    def data(self):
        """The default data at 8x8 (``ImageData``), built once per process."""
        if self._data is None:
            from torch.nn import functional as F

            from vitforge.sw.data import digits_canvas

            d = digits_canvas(seed=self.seed, train_copies=1, canvas=CANVAS)
            n = self.setup.max_train
            self._data = dataclasses.replace(d, x_train=F.avg_pool2d(d.x_train[:n], POOL), y_train=d.y_train[:n],
                                             x_test=F.avg_pool2d(d.x_test, POOL),
                                             groups_train=None if d.groups_train is None else d.groups_train[:n])
        return self._data

    def model_config(self):
        from vitforge.sw.reram.models import ModelConfig

        return ModelConfig(kind=MODEL["kind"], channels=MODEL["channels"], image_size=MODEL["image_size"])

    def geometry(self) -> list[dict]:
        """Every crossbar layer's ``(K, M)`` and vectors per image (``layer_geometry``)."""
        if self._geometry is None:
            from vitforge.sw.reram.cost import layer_geometry
            from vitforge.sw.reram.train import init_model

            side = MODEL["image_size"]
            self._geometry = layer_geometry(init_model(self.model_config(), self.seed), (1, side, side))
        return self._geometry

    def _steps(self, s: float) -> tuple[int, int]:
        n = len(self.data().y_train)
        return (steps_at(self.setup.float_epochs, s, n, self.setup.batch_size),
                steps_at(self.setup.resna_epochs, s, n, self.setup.batch_size))

    def float_state(self, float_steps: int) -> dict:
        """The float-pretrained model's state after ``float_steps`` steps (``train``, method ``plain``)."""
        from vitforge.sw.reram.train import TrainConfig, train

        key = (self.seed, float_steps, self.setup)
        with _LOCK:
            cached = _FLOAT.get(key)
        if cached is not None:
            return cached
        n = len(self.data().y_train)
        epochs = float_steps / math.ceil(n / self.setup.batch_size)
        tc = TrainConfig(method="plain", model=self.model_config(), seed=self.seed, float_epochs=epochs,
                         qat_epochs=0.0, lr=self.setup.lr, batch_size=self.setup.batch_size, max_train=None,
                         progress=False)
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
            state = {k: v.clone() for k, v in train(tc, self.data(), Path(tmp)).state_dict().items()}
        with _LOCK:
            _FLOAT[key] = state
        return state

    def resna_model(self, d: Design, float_steps: int, resna_steps: int):
        """The ReSNA-trained model for ``d``'s cell bits and operating point (``nn.Module``, ``qat`` mode)."""
        import torch

        from vitforge.sw.reram.device import NoiseConfig
        from vitforge.sw.reram.layers import attach, calibrate, detach_sessions, set_mode
        from vitforge.sw.reram.models import build_model
        from vitforge.sw.reram.train import CALIB_IMAGES, WEIGHT_DECAY, TrainConfig

        key = (self.seed, d.cell_bits, d.frequency_hz, d.temperature_k, float_steps, resna_steps, self.setup)
        model = build_model(self.model_config())
        with _LOCK:
            cached = _RESNA.get(key)
        if cached is not None:
            model.load_state_dict(cached)
            set_mode(model, "qat")
            return model.eval()
        model.load_state_dict(self.float_state(float_steps))
        data = self.data()
        x_all, y_all = data.x_train, data.y_train
        calibrate(model, x_all[:CALIB_IMAGES])
        xb = d.crossbar()
        attach(model, xb, NoiseConfig(op=d.op(), prog_sigma=xb.prog_sigma), seed=self.seed * 31 + 1,
               last_layer_noise_scale=TrainConfig().last_layer_noise_scale)
        set_mode(model, "noisy")
        lr = self.setup.lr / 4
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
        gen = torch.Generator().manual_seed(self.seed * 7919 + 2)
        model.train()
        step, bs = 0, self.setup.batch_size
        while step < resna_steps:
            perm = torch.randperm(len(y_all), generator=gen)
            for i in range(0, len(perm), bs):
                if step >= resna_steps:
                    break
                idx = perm[i:i + bs]
                for g in opt.param_groups:
                    g["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / resna_steps))
                loss = torch.nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
        detach_sessions(model)
        set_mode(model, "qat")
        model.eval()
        with _LOCK:
            _RESNA[key] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return model

    # -- objectives -------------------------------------------------------------------------------

    def error(self, d: Design, s: float) -> float:
        """``1 - top-1`` of the ReSNA model for ``d``, trained at fidelity ``s``, on ``d``'s noisy chip."""
        import torch

        from vitforge.sw.reram.device import NoiseConfig
        from vitforge.sw.reram.evaluate import evaluate

        fs, rs = self._steps(max(MIN_FIDELITY, float(s)))
        xb = d.crossbar()
        key = (f"c{d.cell_bits}:r{d.size}:adc{xb.slice_adc_bits[0]}:f{d.frequency_hz:g}:"
               f"T{d.temperature_k:g}:steps{fs}+{rs}:{json.dumps(dataclasses.asdict(self.setup), sort_keys=True)}")
        with _LOCK:
            cached = _ERR.get((self.seed, key))
        if cached is None:
            cached = self._disk.get(key)
        if cached is not None:
            return float(cached)
        with torch.random.fork_rng(devices=[]):  # train() seeds torch's global generator for the init
            model = self.resna_model(d, fs, rs)
            data = self.data()
            n = self.setup.test_images
            res = evaluate(model, data.x_test[:n], data.y_test[:n], xb,
                           NoiseConfig(op=d.op(), prog_sigma=xb.prog_sigma), seeds=(self.seed,))
        err = 1.0 - res["top1_mean"] / 100.0
        with _LOCK:
            _ERR[(self.seed, key)] = err
        self._disk.store(key, err)
        return err

    def costs(self, d: Design) -> tuple[float, float, float]:
        """``(area mm^2, latency us, energy uJ)`` per image of the model on ``d``'s tiles."""
        from vitforge.sw.reram.cost import network_cost

        total = network_cost(self.geometry(), d.crossbar(), d.op())["total"]
        return (sum(total["area_um2"].values()) / UM2_PER_MM2, sum(total["latency_ns"].values()) / NS_PER_US,
                sum(total["energy_pj"].values()) / PJ_PER_UJ)

    def __call__(self, x: np.ndarray, fidelity: np.ndarray) -> np.ndarray:
        out = []
        for row, s in zip(x, fidelity, strict=True):
            d = Design.from_row(row)
            out.append([self.error(d, float(s)), *self.costs(d)])
        return np.asarray(out, dtype=np.float64)


def reram_cost(fidelity: np.ndarray) -> np.ndarray:
    """``c(s) = max(s, 0.1) + 0.2``: training time is proportional to epochs, plus the chip evaluation."""
    return np.maximum(np.asarray(fidelity, dtype=np.float64), MIN_FIDELITY) + EVAL_COST


def all_designs() -> np.ndarray:
    """Every design of the space, ``(7 x 3 x 10 x 6 x 5, 5)`` float64 rows."""
    axes = [range(CELL_BITS[0], CELL_BITS[1] + 1), range(SIZE_LOG2[0], SIZE_LOG2[1] + 1),
            range(ADC_BITS[0], ADC_BITS[1] + 1), range(FREQ_LOG2_GHZ[0], FREQ_LOG2_GHZ[1] + 1), TEMPERATURES_K]
    return np.array(list(itertools.product(*axes)), dtype=np.float64)


def worst_costs(f: ReramObjectives) -> np.ndarray:
    """The largest area, latency and energy over every design of the space: ``(3,)`` float64.

    Each cost grows with the ADC bits, falls with the frequency (or ignores it) and grows with the
    temperature (or ignores it), so the worst design has the most ADC bits at the slowest clock and
    the hottest temperature; cell bits and tile size are searched.
    """
    rows = [[c, z, ADC_BITS[1], FREQ_LOG2_GHZ[0], TEMPERATURES_K[-1]] for c in range(CELL_BITS[0], CELL_BITS[1] + 1)
            for z in range(SIZE_LOG2[0], SIZE_LOG2[1] + 1)]
    return np.max([f.costs(Design.from_row(np.asarray(r, dtype=np.float64))) for r in rows], axis=0)


def reram_problem(seed: int = 0, cache_dir: str | None = None, **setup) -> Problem:
    """The reram design space (see the module docstring).

    Args:
        seed: seeds the data placement, the training and the simulated chip.
        cache_dir: keep the errors in ``cache_dir/reram_err_seed{seed}.json`` across runs.
        **setup: :class:`ReramSetup` fields (epochs, test images, training images), e.g. tiny ones for tests.
    """
    known = [f.name for f in dataclasses.fields(ReramSetup)]
    unknown = sorted(set(setup) - set(known))
    if unknown:
        raise ValueError(f"unknown reram option(s) {unknown}: valid are seed, cache_dir and {', '.join(known)}")
    f = ReramObjectives(seed, cache_dir, ReramSetup(**setup))
    # Reference point: error 1.0 (the worst there is) and 10% over the space's worst area, latency
    # and energy, so that every design counts towards the hypervolume in the cost objectives.
    ref = [1.0, *(REF_MARGIN * worst_costs(f)).tolist()]
    return Problem(bounds=[CELL_BITS, SIZE_LOG2, ADC_BITS, FREQ_LOG2_GHZ, (TEMPERATURES_K[0], TEMPERATURES_K[-1])],
                   objectives=f, cost=reram_cost, ref_point=ref, integers=(0, 1, 2, 3),
                   categories={4: TEMPERATURES_K}, name="reram", objective_names=OBJECTIVES,
                   min_fidelity=MIN_FIDELITY)
