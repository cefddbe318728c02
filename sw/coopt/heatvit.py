"""``heatvit``: the ViT accelerator design space (PE array, clock, token selector) as a :class:`Problem`.

Design variables (rounded before evaluation):

| # | variable | values |
| --- | --- | --- |
| 0 | log2 PE rows | 1..3 (2, 4, 8 rows) |
| 1 | log2 PE columns (lanes) | 2..4 (4, 8, 16) |
| 2 | clock (MHz) | 100..300 |
| 3 | selector block | 1..depth-1 (a HeatViT selector runs before this block) |
| 4 | keep rate | 0.25..1.0 (the selector's kept fraction of the patch tokens) |

Objectives (all minimized): top-1 error of a small ViT with the selector (float, after the dense
stage and the selector stage of sw/train.py on the default data), latency (ms, the cycle model
``CycleLatency`` on the HwConfig ``dataclasses.replace(demo, pe_rows, pe_cols, clock_mhz)``), DSP48E2
and LUT counts (:func:`resources`). The fidelity ``s`` is the fraction of the epoch budget
(dense and selector stages alike), at least :data:`MIN_FIDELITY`; cost ``c(s) = s + 0.1``.

The resource model is calibrated against the README's ``vitforge rtl report`` figures (Yosys
``synth_xilinx -family xcup``): DSP = PEs + 4.05 lanes + 29.8 fits ``demo`` (4x4: 62) and
``zcu102`` (32x64: 2,337) exactly; LUT = 64.0 per PE (zcu102's PE array 131,091 / 2,048) +
8.88 per (sequencer word x lane) (zcu102's ``gemm_sequencer`` 54,579 / (96 x 64)) + 432 per
lane (requantization + residual adder, 27,670 / 64) + 6,421 fixed (``demo``'s total 9,459 less its
per-unit parts: the controller and memories at demo's depths, which every design here keeps).
It gives ``demo`` exactly and ``zcu102`` 8.3% low (219,761 against 239,524 LUTs: zcu102's deeper
memories and controller add about 20k LUTs that demo's fixed part lacks). Other shapes are
extrapolations between these two. The clock does not
enter the resource model (the report has no timing), so the fastest clock always wins on
latency: it is in the space because the cycle model is, not because it trades.

Trained accuracies are cached per (selector block, keep rate, fidelity) in memory and, with
``cache_dir``, in a JSON file, and dense models per fidelity, so repeated design points never retrain.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np

from .diskcache import JsonCache
from .problem import Problem

#: The small ViT: 16x16 canvas, 4x4 patches (16 + class token), D = 32, 3 blocks, one head.
MODEL = {"image_size": 16, "patch_size": 4, "in_chans": 1, "num_classes": 10, "embed_dim": 32, "depth": 3,
         "num_heads": 1, "mlp_ratio": 2.0}
DENSE_EPOCHS = 5.0
PRUNE_EPOCHS = 0.5
LEARNING_RATE = 3e-3
TEST_IMAGES = 300
MIN_FIDELITY = 0.1
COST_OVERHEAD = 0.1

ROWS_LOG2 = (1, 3)
COLS_LOG2 = (2, 4)
CLOCK_MHZ = (100.0, 300.0)
KEEP = (0.25, 1.0)

# Resource model coefficients (see the module docstring for their source).
DSP_PER_PE = 1.0
DSP_PER_LANE = 243.0 / 60.0
LUT_PER_PE = 131_091 / 2048
LUT_PER_SEQ_WORD_LANE = 54_579 / (96 * 64)
LUT_PER_LANE = (15_324 + 12_346) / 64
LUT_DEMO_TOTAL = 9_459
DSP_DEMO_TOTAL = 62


def resources(pe_rows: int, pe_cols: int) -> tuple[float, float]:
    """Modeled (DSP48E2, LUT) of the accelerator with a ``pe_rows x pe_cols`` array (demo's memories)."""
    pes, lanes = pe_rows * pe_cols, pe_cols
    dsp_fixed = DSP_DEMO_TOTAL - 16 * DSP_PER_PE - 4 * DSP_PER_LANE
    dsp = pes * DSP_PER_PE + lanes * DSP_PER_LANE + dsp_fixed
    lut_fixed = LUT_DEMO_TOTAL - (16 * LUT_PER_PE + (4 + 4) * 4 * LUT_PER_SEQ_WORD_LANE + 4 * LUT_PER_LANE)
    lut = pes * LUT_PER_PE + (pe_rows + lanes) * lanes * LUT_PER_SEQ_WORD_LANE + lanes * LUT_PER_LANE + lut_fixed
    return float(dsp), float(lut)


_DENSE: dict = {}
_ACC: dict = {}
_LOCK = threading.Lock()


def _quiet(message: str) -> None:
    """Training's per-check log lines: dropped (an evaluation is one short training among many)."""


def clear_memory_cache() -> None:
    """Forget this process's trained dense models and accuracies (the JSON cache stays)."""
    with _LOCK:
        _DENSE.clear()
        _ACC.clear()


class HeatVitObjectives:
    """``f(x, s)`` of the heatvit space (picklable; caches live in the module, per process)."""

    def __init__(self, seed: int, cache_dir: str | None) -> None:
        self.seed = seed
        self.cache_dir = cache_dir
        self._disk = JsonCache(None if cache_dir is None else Path(cache_dir) / f"heatvit_acc_seed{seed}.json")
        self._latency: dict = {}
        self._data = None

    def _cfg(self):
        from vitforge.sw.vit import ViTConfig

        return ViTConfig(**MODEL)

    def data(self):
        if self._data is None:
            from vitforge.sw.data import digits_canvas

            self._data = digits_canvas(seed=self.seed, train_copies=1, canvas=MODEL["image_size"])
        return self._data

    def accuracy(self, block: int, keep: float, s: float) -> float:
        """Top-1 (%) of the ViT with a selector before ``block`` keeping ``keep``, trained at fidelity ``s``."""
        import torch

        from vitforge.sw.data import validation_split
        from vitforge.sw.latency import Schedule
        from vitforge.sw.train import TrainConfig, evaluate, train_dense, train_selectors

        s = max(MIN_FIDELITY, round(float(s), 4))
        key = f"{block}:{keep:.4f}:{s:.4f}"
        with _LOCK:
            cached = _ACC.get((self.seed, key))
        if cached is None:
            cached = self._disk.get(key)
        if cached is not None:
            return float(cached)
        tc = TrainConfig(seed=self.seed, batch_size=64, lr=LEARNING_RATE, calib_images=128, progress=False)
        split = validation_split(self.data(), tc.val_fraction)
        # Fidelity s: that fraction of the epoch budgets, in optimizer steps over the images trained on.
        steps_per_epoch = len(split.y_fit) / tc.batch_size
        dense_steps = max(1, round(DENSE_EPOCHS * s * steps_per_epoch))
        prune_steps = max(1, round(PRUNE_EPOCHS * s * steps_per_epoch))
        data = self.data()
        dkey = (self.seed, s)
        with torch.random.fork_rng():  # train_dense seeds torch's global generator itself
            if dkey not in _DENSE:
                _DENSE[dkey] = train_dense(self._cfg(), split, tc, dense_steps, log=_quiet)[0].state_dict()
            from vitforge.sw.vit import VisionTransformer

            dense = VisionTransformer(self._cfg())
            dense.set_poly(False)
            dense.load_state_dict(_DENSE[dkey])
            model = train_selectors(dense, Schedule((block,), (keep,), 0.0, 0.0), split, tc, prune_steps, log=_quiet)[0]
            acc = float(evaluate(model, data.x_test[:TEST_IMAGES], data.y_test[:TEST_IMAGES])["top1"])
        with _LOCK:
            _ACC[(self.seed, key)] = acc
        self._disk.store(key, acc)
        return acc

    def latency_ms(self, rows: int, cols: int, clock: float, block: int, keep: float) -> float:
        from vitforge.hw.config import BASE
        from vitforge.sw.latency import CycleLatency, tokens_per_block

        if (rows, cols) not in self._latency:
            # BASE (one-lane row-wise units): its unit_lanes divides every array width in the space, and the
            # resource model (resources()) is calibrated on one-lane builds.
            self._latency[rows, cols] = CycleLatency(dataclasses.replace(BASE, pe_rows=rows, pe_cols=cols))
        cfg = self._cfg().with_selectors((block,), (keep,))
        cycles = self._latency[rows, cols].total_cycles(cfg, tokens_per_block(cfg))
        return cycles / (clock * 1e3)

    def __call__(self, x: np.ndarray, fidelity: np.ndarray) -> np.ndarray:
        out = []
        for row, s in zip(x, fidelity, strict=True):
            rows, cols = 2 ** int(row[0]), 2 ** int(row[1])
            block, keep = int(row[3]), float(row[4])
            acc = self.accuracy(block, keep, float(s))
            dsp, lut = resources(rows, cols)
            out.append([1.0 - acc / 100.0, self.latency_ms(rows, cols, float(row[2]), block, keep), dsp, lut])
        return np.asarray(out, dtype=np.float64)


def heatvit_cost(fidelity: np.ndarray) -> np.ndarray:
    """``c(s) = max(s, 0.1) + 0.1``: training time is proportional to epochs, plus data and evaluation."""
    return np.maximum(np.asarray(fidelity, dtype=np.float64), MIN_FIDELITY) + COST_OVERHEAD


def heatvit_problem(seed: int = 0, cache_dir: str | None = None) -> Problem:
    """The heatvit design space (see the module docstring).

    Args:
        seed: seeds the data placement and the training.
        cache_dir: keep trained accuracies in ``cache_dir/heatvit_acc_seed{seed}.json`` across runs.
    """
    depth = MODEL["depth"]
    f = HeatVitObjectives(seed, cache_dir)
    # Reference point: worse than the worst design in every objective (the smallest array at the
    # slowest clock without pruning; the largest array's resources), with 10% margin; error 1.0 is the worst there is.
    worst_ms = f.latency_ms(2 ** ROWS_LOG2[0], 2 ** COLS_LOG2[0], CLOCK_MHZ[0], depth - 1, KEEP[1])
    dsp_max, lut_max = resources(2 ** ROWS_LOG2[1], 2 ** COLS_LOG2[1])
    ref = [1.0, 1.1 * worst_ms, 1.1 * dsp_max, 1.1 * lut_max]
    return Problem(bounds=[ROWS_LOG2, COLS_LOG2, CLOCK_MHZ, (1, depth - 1), KEEP], objectives=f, cost=heatvit_cost,
                   ref_point=ref, integers=(0, 1, 3), name="heatvit",
                   objective_names=("top-1 error", "latency (ms)", "DSP48E2", "LUT"), min_fidelity=MIN_FIDELITY)


def check_calibration() -> dict:
    """The resource model at the two presets it is calibrated on, against the README's figures."""
    demo, zcu = resources(4, 4), resources(32, 64)
    return {"demo": {"dsp": demo[0], "lut": demo[1], "report": (62, 9_459)},
            "zcu102": {"dsp": zcu[0], "lut": zcu[1], "report": (2_337, 239_524)},
            "lut_error_zcu102": zcu[1] / 239_524 - 1}
