from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from vitforge.sw import data as D


def test_digits_deterministic_and_fixed_split():
    a, b, c = D.digits_canvas(seed=0, train_copies=1), D.digits_canvas(seed=0, train_copies=1), \
        D.digits_canvas(seed=1, train_copies=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.x_test, c.x_test)
    assert torch.equal(a.y_test, c.y_test)  # the split does not depend on the seed
    assert a.x_train.shape[1:] == (1, 32, 32) and a.num_classes == 10
    assert len(a.y_train) + len(a.y_test) == 1797


def test_digits_patch_aligned():
    d = D.digits_canvas(seed=3, train_copies=1)
    # Without noise the digit's bounding box would start on the 4-pixel grid: check the mean image energy
    # per patch is concentrated in whole patches (16 of 64 patches hold the digit).
    x = d.x_test[:50, 0].reshape(50, 8, 4, 8, 4).permute(0, 1, 3, 2, 4).reshape(50, 64, 16)
    energy = x.mean(-1)
    top16 = energy.topk(16, dim=1).values.mean(1)
    rest = energy.topk(48, dim=1, largest=False).values.mean(1)
    assert bool((top16 > rest + 0.1).all())


def test_npz_loader(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
    y = np.arange(20) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = D.load_npz(tmp_path / "d.npz", test_fraction=0.25)
    assert d.x_train.shape == (15, 1, 8, 8) and d.x_test.shape == (5, 1, 8, 8)
    assert d.num_classes == 3 and float(d.x_train.max()) <= 1.0
    np.savez(tmp_path / "bad.npz", x=x)
    with pytest.raises(ValueError, match=r"bad\.npz.*missing"):
        D.load_npz(tmp_path / "bad.npz")


def test_folder_loader(tmp_path):
    from PIL import Image

    for ci, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(4):
            arr = np.full((10, 12), 60 * ci + 10 * i, dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / name / f"{i}.png")
    d = D.load_image_folder(tmp_path, size=8, test_fraction=0.25)
    assert d.classes == ("cat", "dog")
    assert d.x_train.shape[1:] == (1, 8, 8) and len(d.y_train) + len(d.y_test) == 8
    labels = torch.cat([d.y_train, d.y_test])
    assert sorted(labels.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]


def _cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": list(range(n))}
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return batch


def test_cifar_loader(tmp_path):
    b1 = _cifar_batch(tmp_path / "data_batch_1", 6, 0)
    _cifar_batch(tmp_path / "test_batch", 3, 1)
    d = D.load_cifar10(tmp_path)
    assert d.x_train.shape == (6, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32)
    expect = torch.from_numpy(b1[b"data"][2].reshape(3, 32, 32).astype(np.float32) / 255.0)
    assert torch.equal(d.x_train[2], expect)
    assert d.y_train.tolist() == list(range(6))


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_cifar_loader_refuses_code(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    _cifar_batch(tmp_path / "test_batch", 2, 0)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        D.load_cifar10(tmp_path)


def test_load_data_spec_errors():
    with pytest.raises(ValueError, match="data spec"):
        D.load_data("imagenet:/x")
