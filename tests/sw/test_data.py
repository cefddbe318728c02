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


def test_validation_split_is_fixed_whole_groups_and_never_test():
    d = D.digits_canvas(seed=0, train_copies=3)
    s1, s2 = D.validation_split(d, 0.1), D.validation_split(D.digits_canvas(seed=5, train_copies=3), 0.1)
    assert len(s1.y_fit) + len(s1.y_val) == len(d.y_train)
    assert torch.equal(s1.y_val, s2.y_val)  # the split does not move with the training seed
    groups = d.groups_train
    fit_idx = torch.isin(d.x_train.flatten(1), s1.x_fit.flatten(1)).all(1)
    assert set(groups[fit_idx].tolist()).isdisjoint(groups[~fit_idx].tolist())  # no digit on both sides
    assert len(s1.y_val) == 3 * round(len(groups.unique()) * 0.1)
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\), not 0"):
        D.validation_split(d, 0)


def test_npz_groups_and_own_test_split(tmp_path):
    arrays = D.digits_variant(D.DigitsVariant(copies=2, noise=0.3, distractors=2), seed=0)
    again = D.digits_variant(D.DigitsVariant(copies=2, noise=0.3, distractors=2), seed=0)
    assert all(np.array_equal(arrays[k], again[k]) for k in arrays)
    assert arrays["x"].shape == (1348 * 2, 32, 32) and arrays["x_test"].shape == (449, 32, 32)
    D.save_npz(tmp_path / "v.npz", **arrays)
    d = D.load_npz(tmp_path / "v.npz")
    assert len(d.y_train) == 2696 and len(d.y_test) == 449 and torch.equal(d.groups_train,
                                                                          torch.from_numpy(arrays["groups"]))
    s = D.validation_split(d, 0.25)
    assert len(s.y_val) == 2 * round(1348 * 0.25)  # whole digits: both placements of each
    np.savez(tmp_path / "half.npz", x=arrays["x"], y=arrays["y"], x_test=arrays["x_test"])
    with pytest.raises(ValueError, match="x_test and y_test come together"):
        D.load_npz(tmp_path / "half.npz")


def test_digits_variant_names_bad_values():
    with pytest.raises(ValueError, match=r"scales must be drawn from 1, 2, 3, not \(4,\)"):
        D.DigitsVariant(scales=(4,))
