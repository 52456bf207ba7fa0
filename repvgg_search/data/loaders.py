"""Data sets and loaders (digits, synthetic, CIFAR, ImageNet): seeded, shardable, reproducible per epoch."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from .config import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SYNTHETIC_DEFAULT_CLASSES,
    DataConfig,
    DataError,
    DataInfo,
    check_batch_fits,
    validate_data,
)

_log = logging.getLogger(__name__)


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts, e.g. (seed, epoch, "order"); the same on every machine and run."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def seeded_generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from `derive_seed(*parts)`."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def set_epoch(loader, epoch: int) -> None:
    """Make the next pass over `loader` the one of `epoch`: its order and augmentation depend on (seed, epoch)."""
    target = loader if hasattr(loader, "set_epoch") else getattr(loader, "sampler", None)
    if target is None or not hasattr(target, "set_epoch"):
        raise TypeError(f"{type(loader).__name__} has no set_epoch (nor a sampler with one)")
    target.set_epoch(epoch)


def shard_size(n: int, rank: int, world_size: int, pad: bool) -> int:
    """How many of `n` items rank `rank` sees: padded to equal shares (training) or an exact partition (eval)."""
    return math.ceil(n / world_size) if pad else len(range(rank, n, world_size))


def shard_indices(n: int, *, seed: int, epoch: int, shuffle: bool, rank: int, world_size: int, pad: bool) -> Tensor:
    """This rank's indices for one epoch: a (seed, epoch)-seeded permutation, strided across ranks.

    With `pad`, the permutation is extended by its first items so every rank gets the same count (DDP needs
    equal step counts); without it the shards partition the data exactly (evaluation counts then sum to n).
    """
    order = torch.randperm(n, generator=seeded_generator(seed, epoch, "order")) if shuffle else torch.arange(n)
    if world_size > 1:
        if pad:
            total = math.ceil(n / world_size) * world_size
            order = torch.cat([order, order[: total - n]])
        order = order[rank::world_size]
    return order


class TensorLoader:
    """Batches drawn from in-memory tensors: seeded per-epoch shuffling, sharding, optional random translation.

    Cheaper than a DataLoader for small in-memory sets (no per-sample collation). Training loaders drop the
    last incomplete batch (a batch of 1 breaks BatchNorm at 1x1 resolution) unless it is the only one.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        train: bool,
        seed: int = 0,
        translate: int = 0,
        fill: float = 0.0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.translate, self.fill = (translate if train else 0), fill
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch (before dropping the incomplete last batch)."""
        return shard_size(len(self.labels), self.rank, self.world_size, pad=self.train)

    def __len__(self) -> int:
        m, bs = self.num_samples, self.batch_size
        return max(1, m // bs) if self.train else math.ceil(m / bs)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = shard_indices(
            len(self.labels),
            seed=self.seed,
            epoch=self.epoch,
            shuffle=self.train,
            rank=self.rank,
            world_size=self.world_size,
            pad=self.train,
        ).to(self.labels.device)
        gen = seeded_generator(self.seed, self.epoch, self.rank, "augment")
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[idx]
            if self.translate:
                x = random_translate(x, self.translate, gen, self.fill)
            yield x, self.labels[idx]


def random_translate(x: Tensor, max_shift: int, gen: torch.Generator, fill: float) -> Tensor:
    """Shift every image of the batch by its own random (dy, dx) in [-max_shift, max_shift], filling with `fill`."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=fill)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen).tolist()
    return torch.stack([padded[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(offsets)])


DIGITS_FILE = ("datasets", "data", "digits.csv.gz")  # inside scikit-learn: an internal layout, hence the fallback


@functools.lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: 1797 images of 8x8 (values 0..16) and their labels.

    Read from the data file scikit-learn ships, without importing scikit-learn: its import alone costs a trial
    about two seconds. The arrays equal `sklearn.datasets.load_digits()`'s (a test checks it).
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.name=digits needs scikit-learn's bundled data file: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0], *DIGITS_FILE)
    try:
        data = np.loadtxt(path, delimiter=",", dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 65:
            raise ValueError(f"{data.shape} is not 65 columns")
    except (OSError, ValueError) as exc:  # scikit-learn moved or changed its file: its public loader then
        _log.info("digits: %s unusable (%s); reading them with sklearn.datasets.load_digits()", path, exc)
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images.astype(np.float64), digits.target.astype(np.int64)
    return data[:, :-1].reshape(-1, 8, 8).astype(np.float64), data[:, -1]


def digits_split(val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices into the digits: stratified by class (each class holds out
    round(val_fraction x its count) images), fixed by `split_seed`."""
    target = digits_arrays()[1]
    rng = np.random.default_rng(split_seed)
    val = np.concatenate(
        [
            rng.permutation(idx)[: round(len(idx) * val_fraction)]
            for idx in (np.flatnonzero(target == c) for c in np.unique(target))
        ]
    )
    val = np.sort(val)
    return np.setdiff1d(np.arange(len(target)), val), val


@functools.lru_cache(maxsize=4)
def load_digits_split(image_size: int, val_fraction: float, split_seed: int) -> tuple[Tensor, ...]:
    """Digits as normalized 3-channel tensors (x_train, y_train, x_val, y_val, background), resized once, cached.

    Mean and std come from the training split; `background` is the normalized value of a blank pixel (what a
    translation fills in). The tensors are shared by every caller: do not modify them.
    """
    raw_images, raw_labels = digits_arrays()
    train_idx, val_idx = (torch.from_numpy(i) for i in digits_split(val_fraction, split_seed))
    images = torch.from_numpy(raw_images).float().div_(16.0).unsqueeze(1)  # pixel values are 0..16
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(raw_labels).long()
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = ((images - mean) / std).expand(-1, 3, -1, -1).contiguous()  # the presets take RGB input
    return images[train_idx], labels[train_idx], images[val_idx], labels[val_idx], float((0.0 - mean) / std)


def _synthetic(cfg: DataConfig, num_classes: int) -> tuple[Tensor, ...]:
    """Seeded random images with a faint per-class pattern (so a model can learn something) and labels."""
    gen = seeded_generator(cfg.split_seed, "synthetic")
    size = (3, cfg.image_size, cfg.image_size)
    prototypes = torch.randn(num_classes, *size, generator=gen)
    out = []
    for n in (cfg.synthetic_train_size, cfg.synthetic_val_size):
        labels = torch.randint(0, num_classes, (n,), generator=gen)
        out += [torch.randn(n, *size, generator=gen) + 0.5 * prototypes[labels], labels]
    return tuple(out)


class EpochSampler(Sampler):
    """Wraps a sampler so it yields (epoch, index) keys: `SeededDataset` then seeds each sample's augmentation.

    `set_epoch` re-seeds the order: `DistributedSampler.set_epoch`, or the RandomSampler's generator.
    """

    def __init__(self, base: Sampler, seed: int) -> None:
        self.base, self.seed, self.epoch = base, seed, 0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)
        elif getattr(self.base, "generator", None) is not None:
            self.base.generator.manual_seed(derive_seed(self.seed, epoch, "order"))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, int(i)) for i in self.base)

    def __len__(self) -> int:
        return len(self.base)


class ShardSampler(Sampler):
    """In-order exact partition of range(n) across ranks (evaluation: no padding, counts sum to n)."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return shard_size(self.n, self.rank, self.world_size, pad=False)


class SeededDataset(Dataset):
    """Wraps a map-style data set so the random transforms of sample i in epoch e depend only on (seed, e, i).

    Keys are (epoch, index) pairs from `EpochSampler`; the sample's transforms run under a forked CPU RNG, so
    neither the worker that loads it nor the training process's RNG state matters.
    """

    def __init__(self, dataset: Dataset, seed: int, augment: bool) -> None:
        self.dataset, self.seed, self.augment = dataset, seed, augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if not self.augment:
            return self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, epoch, index, "sample"))
            return self.dataset[index]


def build_loaders(
    cfg: DataConfig,
    *,
    device: torch.device | str,
    seed: int,
    distributed: bool = False,
    rank: int = 0,
    world_size: int = 1,
    autoaugment: bool = False,
) -> tuple[object, object, DataInfo]:
    """Training and evaluation loaders for `cfg` and what the model needs to know (`DataInfo`).

    Both loaders support `len()` and `set_epoch(loader, e)`; the training order and augmentation of epoch e
    depend only on (seed, e). `batch_size` is per process; with `distributed` each rank gets its shard.
    """
    validate_data(cfg)
    device = torch.device(device)
    if not distributed:
        rank, world_size = 0, 1
    if cfg.name in ("digits", "synthetic"):
        return _tensor_loaders(cfg, device=device, seed=seed, rank=rank, world_size=world_size)
    train_set, val_set = _image_datasets(cfg, autoaugment)
    num_classes = len(train_set.classes)
    if cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise DataError(f"data.num_classes={cfg.num_classes} but {cfg.root} holds {num_classes} classes")
    check_batch_fits(cfg, len(train_set), world_size)
    kw = {"seed": seed, "device": device, "distributed": distributed, "rank": rank, "world_size": world_size}
    train = _dataloader(train_set, cfg, train=True, **kw)
    val = _dataloader(val_set, cfg, train=False, **kw)
    return train, val, DataInfo(num_classes, 3, cfg.image_size, len(train_set), len(val_set))


def _eval_batch(cfg: DataConfig) -> int:
    return cfg.eval_batch_size or 2 * cfg.batch_size


def _tensor_loaders(
    cfg: DataConfig, *, device: torch.device, seed: int, rank: int, world_size: int
) -> tuple[TensorLoader, TensorLoader, DataInfo]:
    if cfg.name == "digits":
        x_train, y_train, x_val, y_val, fill = load_digits_split(cfg.image_size, cfg.val_fraction, cfg.split_seed)
        num_classes = 10
    else:
        num_classes = cfg.num_classes or SYNTHETIC_DEFAULT_CLASSES
        x_train, y_train, x_val, y_val = _synthetic(cfg, num_classes)
        fill = 0.0
    x_train, y_train, x_val, y_val = (t.to(device) for t in (x_train, y_train, x_val, y_val))
    shard = {"rank": rank, "world_size": world_size, "seed": seed}
    train = TensorLoader(
        x_train, y_train, batch_size=cfg.batch_size, train=True, translate=cfg.translate, fill=fill, **shard
    )
    val = TensorLoader(x_val, y_val, batch_size=_eval_batch(cfg), train=False, **shard)
    return train, val, DataInfo(num_classes, 3, cfg.image_size, len(y_train), len(y_val))


def _image_datasets(cfg: DataConfig, autoaugment: bool) -> tuple[Dataset, Dataset]:
    from torchvision import datasets

    train_tf, val_tf = _transforms(cfg, autoaugment)
    if cfg.name == "imagenet":
        return (
            datasets.ImageFolder(os.path.join(cfg.root, "train"), transform=train_tf),
            datasets.ImageFolder(os.path.join(cfg.root, "val"), transform=val_tf),
        )
    cls = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
    return (
        cls(cfg.root, train=True, download=cfg.download, transform=train_tf),
        cls(cfg.root, train=False, download=cfg.download, transform=val_tf),
    )


def _transforms(cfg: DataConfig, autoaugment: bool):
    """The paper's ImageNet transforms, or the standard CIFAR ones (crop with padding 4 + flip)."""
    from torchvision import transforms as T

    size = cfg.image_size
    if cfg.name == "imagenet":
        mean, std, policy = IMAGENET_MEAN, IMAGENET_STD, T.AutoAugmentPolicy.IMAGENET
        train = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
        val = [T.Resize(int(size * 256 / 224)), T.CenterCrop(size)]
    else:
        mean, std, policy = CIFAR_MEAN, CIFAR_STD, T.AutoAugmentPolicy.CIFAR10
        resize = [T.Resize(size)] if size != 32 else []
        train = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *resize]
        val = resize
    if autoaugment:
        train.append(T.AutoAugment(policy))
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(train + tail), T.Compose(val + tail)


def _dataloader(
    dataset: Dataset,
    cfg: DataConfig,
    *,
    train: bool,
    seed: int,
    device: torch.device,
    distributed: bool,
    rank: int,
    world_size: int,
) -> DataLoader:
    if train and distributed:
        base = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    elif train:
        base = RandomSampler(dataset, generator=torch.Generator())
    else:
        base = ShardSampler(len(dataset), rank, world_size)
    workers, batch = cfg.num_workers, cfg.batch_size if train else _eval_batch(cfg)
    return DataLoader(
        SeededDataset(dataset, seed, augment=train),
        batch_size=batch,
        sampler=EpochSampler(base, seed),
        num_workers=workers,
        pin_memory=device.type == "cuda" if cfg.pin_memory is None else cfg.pin_memory,
        persistent_workers=cfg.persistent_workers and workers > 0,
        drop_last=train and len(base) >= batch,  # a last batch of 1 breaks BatchNorm at 1x1 resolution
        # Worker base seeds come from this generator, not the global RNG the training loop seeds per epoch.
        generator=torch.Generator().manual_seed(seed),
    )


def calibration_images(cfg: DataConfig, n: int, seed: int = 0) -> Tensor:
    """`n` training images for post-training quantization, as the model sees them at evaluation (no augmentation;
    ImageNet: the validation resize and crop): a fixed, seeded choice of the training split, on the CPU."""
    validate_data(cfg)
    if cfg.name == "digits":
        images = load_digits_split(cfg.image_size, cfg.val_fraction, cfg.split_seed)[0]
    elif cfg.name == "synthetic":
        images = _synthetic(cfg, cfg.num_classes or SYNTHETIC_DEFAULT_CLASSES)[0]
    else:
        images = None
        train_set = _image_datasets(cfg, autoaugment=False)[0]
        train_set.transform = _transforms(cfg, autoaugment=False)[1]  # the evaluation transform
    total = len(images) if images is not None else len(train_set)
    if not 1 <= n <= total:
        raise DataError(f"quant.calib_images={n} must be between 1 and the {total} training images")
    chosen = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    if images is not None:
        return images[chosen].float().cpu()
    return torch.stack([train_set[int(i)][0] for i in chosen])
