"""Image classification data: the embedded default (digits on a noisy canvas) and loaders for users' data.

Nothing downloads at run time. The default data set is built from scikit-learn's bundled 8x8
digits: each digit is upscaled, placed at a seeded random patch-aligned position on a larger noisy canvas, so
that most patches are background a token selector can prune. Loaders for users' data read a
folder of class subfolders of images, an ``.npz`` file (keys ``x``/``y``) or CIFAR-10's python
batches (through a restricted unpickler that only rebuilds numpy arrays).

Every loader returns an :class:`ImageData`: ``x`` float32 ``(n, channels, size, size)`` in about
``[0, 1]``, ``y`` int64 ``(n,)`` class indices.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: The default data set's geometry: 8x8 digits upscaled 2x onto a 32x32 canvas.
DIGIT_SIZE = 8
DIGIT_UPSCALE = 2
CANVAS_SIZE = 32
#: Standard deviation of the canvas's Gaussian background noise (digit strokes reach 1.0).
CANVAS_NOISE = 0.15
#: Digits sit at multiples of this many pixels (a multiple of the demo's 4-pixel patches): on the
#: 32x32 canvas that is a 3x3 grid of positions, each digit covering exactly 16 of the 64 patches.
#: Patch-aligned digits look the same wherever they are, which a small ViT learns in a few epochs
#: (with 4-pixel alignment, 25 positions, it overfits the 1,348 training digits within the budget).
ALIGN = 8
#: The train/test split of the default data is fixed (independent of the training seed).
SPLIT_SEED = 1234
TEST_FRACTION = 0.25
#: The validation split carved from the training images is fixed too (its own seed).
VAL_SPLIT_SEED = 4321
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass(frozen=True)
class ImageData:
    """A classification data set split into train and test.

    Attributes:
        x_train, x_test: float32 ``(n, channels, size, size)``.
        y_train, y_test: int64 ``(n,)`` in ``0..num_classes-1``.
        classes: class names, index = label.
        groups_train: optional int64 ``(n_train,)`` group of each training image (images of one
            group are views of one source, e.g. the placements of one digit): the validation
            split keeps each group on one side, so that validation images are unseen sources.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    groups_train: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("x_train", "x_test"):
            x = getattr(self, name)
            if x.dim() != 4 or x.shape[2] != x.shape[3] or x.dtype != torch.float32:
                raise ValueError(f"{name} must be float32 (n, channels, size, size), got {x.dtype} {tuple(x.shape)}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"train and test images differ: {tuple(self.x_train.shape)} vs {tuple(self.x_test.shape)}")
        for xs, ys, name in ((self.x_train, self.y_train, "train"), (self.x_test, self.y_test, "test")):
            if ys.dtype != torch.int64 or ys.shape != (xs.shape[0],):
                raise ValueError(f"{name} labels must be int64 ({xs.shape[0]},), got {ys.dtype} {tuple(ys.shape)}")
            if len(ys) and (int(ys.min()) < 0 or int(ys.max()) >= len(self.classes)):
                raise ValueError(f"{name} labels must be in 0..{len(self.classes) - 1}")
        g = self.groups_train
        if g is not None and (g.dtype != torch.int64 or g.shape != self.y_train.shape):
            raise ValueError(f"groups_train must be int64 {tuple(self.y_train.shape)}, got {g.dtype} {tuple(g.shape)}")

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), not {test_fraction!r}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _place(digits: np.ndarray, rng: np.random.Generator, canvas: int, noise: float, align: int) -> np.ndarray:
    """Upscaled digits ``(n, s, s)`` in [0, 1] at random positions (multiples of ``align``) on noisy
    canvases ``(n, canvas, canvas)``."""
    n, size = digits.shape[0], digits.shape[1]
    out = rng.normal(0.0, noise, size=(n, canvas, canvas)).astype(np.float32)
    rows = rng.integers(0, (canvas - size) // align + 1, size=n) * align
    cols = rng.integers(0, (canvas - size) // align + 1, size=n) * align
    for i in range(n):
        out[i, rows[i]:rows[i] + size, cols[i]:cols[i] + size] += digits[i]
    return out


def digits_canvas(seed: int = 0, train_copies: int = 9, canvas: int = CANVAS_SIZE) -> ImageData:
    """The default data set: sklearn's 8x8 digits, upscaled 2x, on a noisy ``canvas`` x ``canvas`` image.

    Args:
        seed: seeds the digits' positions and the noise (the split itself is fixed).
        train_copies: placements of each training digit (test digits are placed once).
        canvas: canvas side (>= 16).

    Returns:
        :class:`ImageData` with 1 channel, 10 classes; deterministic for a given seed.
    """
    from sklearn.datasets import load_digits

    side = DIGIT_SIZE * DIGIT_UPSCALE
    if canvas < side:
        raise ValueError(f"canvas must be at least {side} pixels, not {canvas}")
    if train_copies < 1:
        raise ValueError(f"train_copies must be positive, not {train_copies}")
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    big = np.kron(images, np.ones((DIGIT_UPSCALE, DIGIT_UPSCALE), dtype=np.float32))
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = _split(len(labels), TEST_FRACTION, SPLIT_SEED)
    rng = np.random.default_rng(seed)
    x_train = _place(np.repeat(big[train_idx], train_copies, axis=0), rng, canvas, CANVAS_NOISE, ALIGN)
    y_train = np.repeat(labels[train_idx], train_copies)
    x_test = _place(big[test_idx], rng, canvas, CANVAS_NOISE, ALIGN)
    return ImageData(
        torch.from_numpy(x_train[:, None]), torch.from_numpy(y_train),
        torch.from_numpy(x_test[:, None]), torch.from_numpy(labels[test_idx]),
        tuple(str(c) for c in range(10)),
        groups_train=torch.from_numpy(np.repeat(train_idx.astype(np.int64), train_copies)),
    )


@dataclass(frozen=True)
class DigitsVariant:
    """A harder digits canvas (``scripts/make_datasets.py``): more noise, distractors, other digit
    sizes and positions, fewer placements per digit.

    Attributes:
        copies: placements of every training digit (one group per digit; test digits once).
        noise: standard deviation of the Gaussian background.
        distractors: 4x4-pixel fragments of other digits scattered on each canvas.
        distractor_gain: brightness of the fragments (digit strokes reach 1.0).
        scales: upscale factors drawn per image (1: 8x8 digits, 2: 16x16).
        align: positions are multiples of this many pixels.
    """

    copies: int = 3
    noise: float = 0.3
    distractors: int = 3
    distractor_gain: float = 0.8
    scales: tuple[int, ...] = (2,)
    align: int = ALIGN

    def __post_init__(self) -> None:
        if self.copies < 1:
            raise ValueError(f"copies must be positive, not {self.copies}")
        if self.noise < 0 or self.distractor_gain < 0 or self.distractors < 0:
            raise ValueError(f"noise, distractors and distractor_gain must be >= 0, not {self.noise}, "
                             f"{self.distractors}, {self.distractor_gain}")
        if not self.scales or any(s not in (1, 2, 3) for s in self.scales):
            raise ValueError(f"scales must be drawn from 1, 2, 3, not {self.scales}")
        if self.align < 1:
            raise ValueError(f"align must be positive, not {self.align}")


#: Side of the distractor fragments (pixels).
FRAGMENT = 4


def digits_variant(variant: DigitsVariant, seed: int, canvas: int = CANVAS_SIZE) -> dict[str, np.ndarray]:
    """The default data's digits and train/test split on a harder canvas: every training digit placed
    ``variant.copies`` times, every test digit once, with noise and distractors.

    Returns:
        ``load_npz``'s arrays: ``x``/``x_test`` uint8 ``(n, canvas, canvas)`` (0..255, clipped),
        ``y``/``y_test`` int64, ``groups`` int64 ``(n,)`` the source digit of each training image.
    """
    from sklearn.datasets import load_digits

    if canvas < DIGIT_SIZE * max(variant.scales):
        raise ValueError(f"canvas must be at least {DIGIT_SIZE * max(variant.scales)} pixels, not {canvas}")
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = _split(len(labels), TEST_FRACTION, SPLIT_SEED)
    rng = np.random.default_rng(seed)
    src = np.repeat(train_idx, variant.copies)
    x = _place_variant(images, src, variant, rng, canvas)
    x_test = _place_variant(images, test_idx, variant, rng, canvas)
    return {"x": x, "y": labels[src], "groups": src.astype(np.int64), "x_test": x_test, "y_test": labels[test_idx]}


def _place_variant(images: np.ndarray, src: np.ndarray, variant: DigitsVariant, rng: np.random.Generator,
                   canvas: int) -> np.ndarray:
    """Digits ``images[src]`` on noisy canvases with distractor fragments, as uint8 ``(n, canvas, canvas)``."""
    n = len(src)
    out = rng.normal(0.0, variant.noise, size=(n, canvas, canvas)).astype(np.float32)
    scales = rng.choice(np.asarray(variant.scales), size=n)
    for i in range(n):
        for _ in range(variant.distractors):
            other = images[rng.integers(len(images))]
            r, c = rng.integers(0, DIGIT_SIZE - FRAGMENT + 1, size=2)
            fr, fc = rng.integers(0, canvas - FRAGMENT + 1, size=2)
            piece = other[r:r + FRAGMENT, c:c + FRAGMENT]
            out[i, fr:fr + FRAGMENT, fc:fc + FRAGMENT] += variant.distractor_gain * piece
        k = int(scales[i])
        digit = np.kron(images[src[i]], np.ones((k, k), dtype=np.float32))
        side = DIGIT_SIZE * k
        slots = (canvas - side) // variant.align + 1
        r, c = rng.integers(0, slots, size=2) * variant.align
        out[i, r:r + side, c:c + side] += digit
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """Write ``arrays`` to ``path`` (.npz) through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def _to_nchw(x: np.ndarray, source: str) -> np.ndarray:
    """Images ``(n, h, w)``, ``(n, h, w, c)`` or ``(n, c, h, w)`` (c in 1, 3) to float32 NCHW in [0, 1]."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3]:
        raise ValueError(f"{source}: images must be square (n, h, w[, c]) with 1 or 3 channels, got {x.shape}")
    x = x.astype(np.float32)
    if x.size and float(x.max()) > 1.0:
        x = x / 255.0
    return np.ascontiguousarray(x)


def _labels(y: np.ndarray, source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise ValueError(f"{source}: labels must be a 1-D array of non-negative integers, got {y.dtype} {y.shape}")
    n_classes = int(y.max()) + 1 if y.size else 0
    return y.astype(np.int64), tuple(str(c) for c in range(n_classes))


def _group_split(groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(kept, held out)`` of ``groups`` (int ``(n,)``), holding out about ``fraction`` of the
    groups, whole (seeded); both sorted."""
    ids = np.unique(groups)
    _, held_ids = _split(len(ids), fraction, seed)
    held = np.isin(groups, ids[held_ids])
    return np.nonzero(~held)[0], np.nonzero(held)[0]


def _from_arrays(x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], test_fraction: float,
                 seed: int, source: str, groups: np.ndarray | None = None) -> ImageData:
    if len(x) != len(y):
        raise ValueError(f"{source}: {len(x)} images but {len(y)} labels")
    if groups is not None and groups.shape != y.shape:
        raise ValueError(f"{source}: groups must have one entry per image ({y.shape}), got {groups.shape}")
    tr, te = _split(len(y), test_fraction, seed) if groups is None else _group_split(groups, test_fraction, seed)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    g = None if groups is None else torch.from_numpy(groups[tr].astype(np.int64))
    return ImageData(xt[tr].contiguous(), yt[tr].contiguous(), xt[te].contiguous(), yt[te].contiguous(), classes,
                     groups_train=g)


def load_npz(path: str | Path, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> ImageData:
    """An ``.npz`` with ``x`` (images, uint8 0..255 or float 0..1) and ``y`` (int labels), split by seed.

    Optional arrays: ``x_test``/``y_test``, a test split of its own (then ``x``/``y`` are all
    training images); ``groups`` (int, one per ``x`` image) keeps the images of a group (views
    of one source) on one side of the train/test split and of the validation split.
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as f:
        missing = {"x", "y"} - set(f.files)
        if missing:
            raise ValueError(f"{path}: missing array(s) {sorted(missing)}; it has {sorted(f.files)}")
        if ("x_test" in f.files) != ("y_test" in f.files):
            raise ValueError(f"{path}: x_test and y_test come together; it has {sorted(f.files)}")
        x, y = f["x"], f["y"]
        groups = f["groups"] if "groups" in f.files else None
        test = (f["x_test"], f["y_test"]) if "x_test" in f.files else None
    if groups is not None and not np.issubdtype(groups.dtype, np.integer):
        raise ValueError(f"{path}: groups must be integers, got {groups.dtype}")
    if test is None:
        y, classes = _labels(y, str(path))
        return _from_arrays(_to_nchw(x, str(path)), y, classes, test_fraction, seed, str(path), groups)
    y, classes = _labels(np.concatenate([np.asarray(y), np.asarray(test[1])]), str(path))
    y_train, y_test = y[: len(x)], y[len(x):]
    if len(x) != len(y_train) or len(test[0]) != len(y_test):
        raise ValueError(f"{path}: {len(x)} images but {len(y_train)} labels, or {len(test[0])} test images but "
                         f"{len(y_test)} test labels")
    if groups is not None and groups.shape != y_train.shape:
        raise ValueError(f"{path}: groups must have one entry per image ({y_train.shape}), got {groups.shape}")
    return ImageData(torch.from_numpy(_to_nchw(x, str(path))), torch.from_numpy(y_train),
                     torch.from_numpy(_to_nchw(test[0], f"{path} (x_test)")), torch.from_numpy(y_test), classes,
                     groups_train=None if groups is None else torch.from_numpy(groups.astype(np.int64)))


def load_image_folder(
    root: str | Path, size: int, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED, grayscale: bool = True
) -> ImageData:
    """A folder of class subfolders of images (``root/<class>/<image>``), resized to ``size`` x ``size``.

    Classes are the subfolder names in sorted order; images are read with Pillow (a matplotlib
    dependency) and converted to grayscale (or RGB with ``grayscale=False``).
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise ValueError(f"{root}: no class subfolders")
    images, labels = [], []
    for label, cdir in enumerate(class_dirs):
        for f in sorted(cdir.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(f) as im:
                im = im.convert("L" if grayscale else "RGB").resize((size, size), Image.Resampling.BILINEAR)
                images.append(np.asarray(im, dtype=np.uint8))
            labels.append(label)
    if not images:
        raise ValueError(f"{root}: no images with suffixes {IMAGE_SUFFIXES}")
    x = _to_nchw(np.stack(images).astype(np.float32) / 255.0, str(root))
    return _from_arrays(x, np.asarray(labels, dtype=np.int64), tuple(p.name for p in class_dirs),
                        test_fraction, seed, str(root))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds plain numpy arrays and nothing else (CIFAR batches are pickles)."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a CIFAR batch (a dict), got {type(data).__name__}")
    data = {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}
    if "data" not in data or "labels" not in data:
        raise ValueError(f"{path}: CIFAR batch without 'data'/'labels' (keys {sorted(data)})")
    x = np.asarray(data["data"], dtype=np.uint8)
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: CIFAR data must be (n, 3072) uint8, got {x.shape}")
    return x.reshape(-1, 3, 32, 32), np.asarray(data["labels"], dtype=np.int64)


def load_cifar10(root: str | Path) -> ImageData:
    """CIFAR-10's python batches (``data_batch_1..5``, ``test_batch``) under ``root``.

    The batches are pickles; they are read with a restricted unpickler that only reconstructs
    numpy arrays, so a crafted file cannot run code. Missing training batches are skipped (at
    least one is needed); ``test_batch`` is required.
    """
    root = Path(root)
    train = [root / f"data_batch_{i}" for i in range(1, 6) if (root / f"data_batch_{i}").is_file()]
    if not train:
        raise FileNotFoundError(f"{root}: no CIFAR-10 data_batch_* files")
    if not (root / "test_batch").is_file():
        raise FileNotFoundError(f"{root / 'test_batch'}: missing")
    parts = [_load_cifar_batch(p) for p in train]
    x_te, y_te = _load_cifar_batch(root / "test_batch")
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    return ImageData(
        torch.from_numpy(x_tr.astype(np.float32) / 255.0), torch.from_numpy(y_tr),
        torch.from_numpy(x_te.astype(np.float32) / 255.0), torch.from_numpy(y_te), classes,
    )


@dataclass(frozen=True)
class Split:
    """Training images split into the images trained on and a validation set.

    Attributes:
        x_fit, y_fit: float32 ``(n_fit, C, H, W)``, int64 ``(n_fit,)``: trained on.
        x_val, y_val: float32 ``(n_val, C, H, W)``, int64 ``(n_val,)``: for stopping, threshold
            calibration and choosing checkpoints (never the test set).
    """

    x_fit: torch.Tensor
    y_fit: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def validation_split(data: ImageData, fraction: float, max_train: int | None = None) -> Split:
    """Carve a fixed validation set (:data:`VAL_SPLIT_SEED`) of about ``fraction`` of the training
    images (whole groups where ``data.groups_train`` is set) from ``data``'s training split.

    ``max_train``: first keep only the first ``max_train`` training images (tests).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), not {fraction!r}")
    n = len(data.y_train) if max_train is None else min(max_train, len(data.y_train))
    if n < 2:
        raise ValueError(f"need at least 2 training images to carve a validation set, got {n}")
    if data.groups_train is None:
        fit, val = _split(n, fraction, VAL_SPLIT_SEED)
    else:
        fit, val = _group_split(data.groups_train[:n].numpy(), fraction, VAL_SPLIT_SEED)
        if len(fit) == 0 or len(val) == 0:
            fit, val = _split(n, fraction, VAL_SPLIT_SEED)
    fit_t, val_t = torch.from_numpy(fit), torch.from_numpy(val)
    return Split(data.x_train[fit_t], data.y_train[fit_t], data.x_train[val_t], data.y_train[val_t])


def load_data(spec: str | None, seed: int = 0, size: int = CANVAS_SIZE) -> ImageData:
    """Data by spec: None/``"digits"`` (default), ``npz:PATH``, ``folder:PATH``, ``cifar10:DIR``."""
    if spec in (None, "", "digits"):
        return digits_canvas(seed=seed, canvas=size)
    kind, _, arg = spec.partition(":")
    if kind == "npz":
        return load_npz(arg)
    if kind == "folder":
        return load_image_folder(arg, size)
    if kind == "cifar10":
        return load_cifar10(arg)
    raise ValueError(f"data spec must be 'digits', 'npz:PATH', 'folder:PATH' or 'cifar10:DIR', not {spec!r}")
