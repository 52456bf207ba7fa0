"""Data sets and loaders (digits, synthetic, CIFAR, ImageNet): seeded, shardable, reproducible per epoch."""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .config import (
    CIFAR_MEAN,
    CIFAR_STD,
    SYNTHETIC_DEFAULT_CLASSES,
    DataConfig,
    DataError,
    DataInfo,
    check_batch_fits,
    validate_data,
)
from .device import DataWait, timed
from .pipeline import build_image_loaders, eval_batch_size, image_calibration, map_loader
from .sampling import seeded_generator, shard_indices, shard_size

_log = logging.getLogger(__name__)


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
        self.last_wait = DataWait()  # of the latest pass: slicing (and shifting) a batch is the loop's data wait

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
        self.last_wait = DataWait()
        return timed(self._batches(), self.last_wait)

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
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


def build_loaders(
    cfg: DataConfig,
    *,
    device: torch.device | str,
    seed: int,
    distributed: bool = False,
    rank: int = 0,
    world_size: int = 1,
    autoaugment: bool = False,
    channels_last: bool = False,
) -> tuple[object, object, DataInfo]:
    """Training and evaluation loaders for `cfg` and what the model needs to know (`DataInfo`).

    Both loaders support `len()` and `set_epoch(loader, e)`; the training order and augmentation of epoch e
    depend only on (seed, e). `batch_size` is per process; with `distributed` each rank gets its shard.
    ImageNet batches arrive normalized on `device` (channels_last when asked: the uint8 path of `pipeline`);
    the digits, synthetic and ImageNet loaders measure each pass's wait for data (`device.last_wait`).
    """
    validate_data(cfg, device)
    device = torch.device(device)
    if not distributed:
        rank, world_size = 0, 1
    if cfg.name in ("digits", "synthetic"):
        return _tensor_loaders(cfg, device=device, seed=seed, rank=rank, world_size=world_size)
    shard = {"seed": seed, "distributed": distributed, "rank": rank, "world_size": world_size}
    if cfg.name == "imagenet":
        return build_image_loaders(cfg, device=device, autoaugment=autoaugment, channels_last=channels_last, **shard)
    train_set, val_set = _cifar_datasets(cfg, autoaugment)
    check_batch_fits(cfg, len(train_set), world_size)
    train = map_loader(train_set, cfg, train=True, device=device, **shard)
    val = map_loader(val_set, cfg, train=False, device=device, **shard)
    return train, val, DataInfo(len(train_set.classes), 3, cfg.image_size, len(train_set), len(val_set))


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
    val = TensorLoader(x_val, y_val, batch_size=eval_batch_size(cfg), train=False, **shard)
    return train, val, DataInfo(num_classes, 3, cfg.image_size, len(y_train), len(y_val))


def _cifar_datasets(cfg: DataConfig, autoaugment: bool) -> tuple[Dataset, Dataset]:
    """CIFAR with the standard float transforms (crop with padding 4 + flip), normalized in the workers."""
    from torchvision import datasets
    from torchvision import transforms as T

    resize = [T.Resize(cfg.image_size)] if cfg.image_size != 32 else []
    train = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *resize]
    if autoaugment:
        train.append(T.AutoAugment(T.AutoAugmentPolicy.CIFAR10))
    tail = [T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)]
    cls = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
    return (
        cls(cfg.root, train=True, download=cfg.download, transform=T.Compose(train + tail)),
        cls(cfg.root, train=False, download=cfg.download, transform=T.Compose(resize + tail)),
    )


def calibration_images(cfg: DataConfig, n: int, seed: int = 0) -> Tensor:
    """`n` training images for post-training quantization, as the model sees them at evaluation (no augmentation;
    ImageNet: the validation resize and crop): a fixed, seeded choice of the training split, on the CPU."""
    validate_data(cfg)
    if cfg.name == "imagenet":
        return image_calibration(cfg, n, seed)
    if cfg.name == "digits":
        images = load_digits_split(cfg.image_size, cfg.val_fraction, cfg.split_seed)[0]
    elif cfg.name == "synthetic":
        images = _synthetic(cfg, cfg.num_classes or SYNTHETIC_DEFAULT_CLASSES)[0]
    else:
        images = None
        train_set, val_set = _cifar_datasets(cfg, autoaugment=False)
        train_set.transform = val_set.transform  # the evaluation transform
    total = len(images) if images is not None else len(train_set)
    if not 1 <= n <= total:
        raise DataError(f"quant.calib_images={n} must be between 1 and the {total} training images")
    chosen = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    if images is not None:
        return images[chosen].float().cpu()
    return torch.stack([train_set[int(i)][0] for i in chosen])
