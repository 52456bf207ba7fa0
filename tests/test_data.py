"""Data: the digits split, normalization, seeded per-epoch loaders, sharding, ImageFolder and validation errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from repvgg_search.data import (
    DataConfig,
    DataError,
    TensorLoader,
    build_loaders,
    digits_arrays,
    digits_split,
    load_digits_split,
    loaders,
    set_epoch,
    validate_data,
)


def _batches(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    set_epoch(loader, epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_digits_are_scikit_learns():
    from sklearn.datasets import load_digits

    images, target = digits_arrays()
    reference = load_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(target, reference.target)


def test_digits_fall_back_to_load_digits_when_the_file_layout_changes(monkeypatch):
    """scikit-learn's file layout is internal: when the file is not where it was, its public loader is used."""
    monkeypatch.setattr(loaders, "DIGITS_FILE", ("datasets", "data", "moved", "digits.csv.gz"))
    loaders.digits_arrays.cache_clear()
    try:
        images, target = loaders.digits_arrays()
    finally:
        loaders.digits_arrays.cache_clear()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float64 and target.dtype == np.int64
    assert np.array_equal(images, digits_arrays()[0]) and np.array_equal(target, digits_arrays()[1])


def test_digits_split_is_stratified_disjoint_and_fixed():
    target = digits_arrays()[1]
    train, val = digits_split(0.2, 0)
    assert len(set(train) & set(val)) == 0 and len(train) + len(val) == len(target) == 1797
    for c in range(10):  # every class keeps its share in the held-out split
        n_c = (target == c).sum()
        assert abs((target[val] == c).sum() - 0.2 * n_c) <= 1
    again_train, again_val = digits_split(0.2, 0)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not np.array_equal(val, digits_split(0.2, 1)[1])


def test_digits_tensors_shapes_and_normalization():
    x_train, y_train, x_val, y_val, fill = load_digits_split(32, 0.2, 0)
    assert x_train.shape == (len(y_train), 3, 32, 32) and x_val.shape == (len(y_val), 3, 32, 32)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert torch.equal(x_train[:, 0], x_train[:, 2])  # grey digits replicated to RGB
    assert abs(x_train.mean().item()) < 1e-4 and abs(x_train.std().item() - 1) < 1e-3  # train-split statistics
    assert abs(x_val.mean().item()) < 0.1  # the val split uses the train statistics: close, not exact
    assert x_train.min().item() == pytest.approx(fill, abs=1e-5)  # a blank pixel is the darkest value


def test_build_loaders_digits_info_and_batches():
    cfg = DataConfig(batch_size=100)
    train, val, info = build_loaders(cfg, device="cpu", seed=0)
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 3, 32)
    assert info.train_size + info.val_size == 1797 and info.val_size == len(digits_split(0.2, 0)[1]) == 359
    assert len(train) == info.train_size // 100  # the incomplete last training batch is dropped
    assert len(val) == -(-info.val_size // 200)  # eval batch defaults to 2 x batch_size, nothing dropped
    x, y = next(iter(train))
    assert x.shape == (100, 3, 32, 32) and y.shape == (100,)
    assert sum(len(y) for _, y in val) == info.val_size


def test_training_order_and_augmentation_depend_only_on_seed_and_epoch():
    cfg = DataConfig(batch_size=128, translate=2)
    train, _, _ = build_loaders(cfg, device="cpu", seed=3)
    epoch1 = _batches(train, 1)
    _batches(train, 5)  # whatever ran in between
    assert _same(epoch1, _batches(train, 1))
    other_train, _, _ = build_loaders(cfg, device="cpu", seed=3)
    assert _same(epoch1, _batches(other_train, 1))  # a fresh loader (e.g. after a restart) agrees
    assert not _same(epoch1, _batches(train, 2))
    reseeded, _, _ = build_loaders(cfg, device="cpu", seed=4)
    assert not _same(epoch1, _batches(reseeded, 1))


def test_translation_only_on_training_batches():
    x_train, y_train, x_val, y_val, fill = load_digits_split(32, 0.2, 0)
    plain = TensorLoader(x_train, y_train, batch_size=64, train=True, translate=0)
    shifted = TensorLoader(x_train, y_train, batch_size=64, train=True, translate=2, fill=fill)
    (xp, yp), (xs, ys) = next(iter(plain)), next(iter(shifted))
    assert torch.equal(yp, ys) and not torch.equal(xp, xs)
    assert torch.isclose(xs.amin(), torch.tensor(fill))  # filled with blank pixels, nothing brighter invented
    val = TensorLoader(x_val, y_val, batch_size=1000, train=False, translate=2, fill=fill)
    assert torch.equal(next(iter(val))[0], x_val)


@pytest.mark.parametrize("n", [1437, 10])
def test_sharding_covers_the_data_with_equal_training_shares(n):
    x, y = torch.zeros(n, 1), torch.arange(n)
    shards = [TensorLoader(x, y, batch_size=1, train=True, seed=0, rank=r, world_size=2) for r in range(2)]
    seen = [torch.cat([b for _, b in _batches(s, 4)]) for s in shards]
    assert len(seen[0]) == len(seen[1]) == -(-n // 2)  # DDP needs the same step count on every rank
    assert set(torch.cat(seen).tolist()) == set(range(n))
    evals = [TensorLoader(x, y, batch_size=7, train=False, rank=r, world_size=2) for r in range(2)]
    parts = [torch.cat([b for _, b in e]) for e in evals]
    assert sorted(torch.cat(parts).tolist()) == list(range(n))  # exact partition: eval counts sum to n


def test_synthetic_is_seeded_and_sized():
    cfg = DataConfig(name="synthetic", num_classes=4, synthetic_train_size=40, synthetic_val_size=12, batch_size=8)
    train, _, info = build_loaders(cfg, device="cpu", seed=0)
    assert (info.num_classes, info.train_size, info.val_size) == (4, 40, 12)
    x, y = next(iter(train))
    assert x.shape == (8, 3, 32, 32) and int(y.max()) < 4
    again, _, _ = build_loaders(cfg, device="cpu", seed=0)
    assert _same(_batches(train, 0), _batches(again, 0))
    assert build_loaders(dataclasses.replace(cfg, num_classes=None), device="cpu", seed=0)[2].num_classes == 10


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    """A tiny ImageFolder tree (2 classes, 4 train and 2 val images each) of random RGB pictures."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for cls in ("n01", "n02"):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def test_imagenet_folder_loaders_are_reproducible(imagenet_root):
    cfg = DataConfig(name="imagenet", root=str(imagenet_root), batch_size=3, eval_batch_size=4)
    train, val, info = build_loaders(cfg, device="cpu", seed=0, autoaugment=True)
    assert (info.num_classes, info.train_size, info.val_size) == (2, 8, 4)
    epoch0 = _batches(train, 0)
    assert len(epoch0) == 2 and epoch0[0][0].shape == (3, 3, 32, 32)
    assert _same(epoch0, _batches(train, 0)) and not _same(epoch0, _batches(train, 1))
    assert [x.shape[0] for x, _ in val] == [4]


def test_imagenet_augmentation_does_not_depend_on_workers(imagenet_root):
    cfg = DataConfig(name="imagenet", root=str(imagenet_root), batch_size=3, num_workers=0)
    train, _, _ = build_loaders(cfg, device="cpu", seed=0)
    with_workers, _, _ = build_loaders(dataclasses.replace(cfg, num_workers=2), device="cpu", seed=0)
    for epoch in (0, 1):  # persistent workers keep their RNG between epochs: the per-sample seed must win
        assert _same(_batches(train, epoch), _batches(with_workers, epoch))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"name": "mnist"}, "data.name='mnist' is unknown; allowed: digits, cifar10, cifar100, imagenet, synthetic"),
        ({"batch_size": 0}, "data.batch_size=0 must be an integer >= 1"),
        ({"eval_batch_size": -1}, "data.eval_batch_size"),
        ({"image_size": 16}, "data.image_size=16 must be an integer >= 32"),
        ({"num_workers": -1}, "data.num_workers"),
        ({"translate": -1}, "data.translate"),
        ({"val_fraction": 1.0}, "data.val_fraction=1.0 must be in [0.01, 0.9]"),
        ({"num_classes": 5}, "data.num_classes=5 but digits has 10 classes"),
        ({"name": "synthetic", "synthetic_train_size": 0}, "data.synthetic_train_size"),
        ({"name": "synthetic", "synthetic_val_size": 0}, "data.synthetic_val_size"),
        ({"name": "cifar10"}, "data.root is not set for data.name=cifar10: set data.root=<dir> and data.download=true"),
        ({"name": "imagenet"}, "<root>/train/<class>/<image> and <root>/val/<class>/<image>"),
    ],
)
def test_validation_names_the_field(changes, expected):
    with pytest.raises(DataError) as info:
        validate_data(dataclasses.replace(DataConfig(), **changes))
    assert expected in str(info.value)


def test_missing_data_errors_name_the_path_and_the_fix(tmp_path):
    cifar = DataConfig(name="cifar100", root=str(tmp_path))
    with pytest.raises(DataError, match=r"cifar-100-python.*data\.download=true"):
        build_loaders(cifar, device="cpu", seed=0)  # raised before any download or load
    validate_data(dataclasses.replace(cifar, download=True))  # would download: nothing missing to report
    (tmp_path / "train" / "n01").mkdir(parents=True)
    with pytest.raises(DataError, match=r"val is missing or empty; expected an ImageFolder layout"):
        validate_data(DataConfig(name="imagenet", root=str(tmp_path)))
