"""ImageNet loaders on the uint8 path: ImageFolder or webdataset shards, decoded and cropped in the loader workers
(PIL or torchvision) or on the GPU (DALI), collated as uint8, normalized on the device by `DeviceLoader`."""

from __future__ import annotations

import os

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from .config import IMAGENET_MEAN, IMAGENET_STD, DataConfig, DataError, DataInfo, check_batch_fits, check_dali
from .decode import EvalDecode, TrainDecode
from .device import DeviceLoader
from .sampling import EpochSampler, SeededDataset, ShardSampler
from .shards import ShardSet, ShardStream


def read_bytes(path: str) -> bytes:
    """A file's bytes: the ImageFolder loader of the uint8 path (decoding happens in the transform)."""
    with open(path, "rb") as f:
        return f.read()


def eval_batch_size(cfg: DataConfig) -> int:
    """Evaluation images per batch and process: data.eval_batch_size, or 2 x data.batch_size."""
    return cfg.eval_batch_size or 2 * cfg.batch_size


def worker_decoder(cfg: DataConfig) -> str:
    """The decoder the loader workers run: DALI decodes on the GPU, so a CPU-side step (calibration) uses PIL."""
    return "pil" if cfg.decoder == "dali" else cfg.decoder


def folder_datasets(cfg: DataConfig, autoaugment: bool) -> tuple[Dataset, Dataset]:
    """root/train and root/val as ImageFolders of uint8 (S, S, 3) crops: the file list and labels of today's."""
    from torchvision.datasets import ImageFolder

    decoder, size = worker_decoder(cfg), cfg.image_size
    train_tf = TrainDecode(size, decoder, cfg.jpeg_draft, autoaugment)
    val_tf = EvalDecode(size, decoder, cfg.jpeg_draft)
    return (
        ImageFolder(os.path.join(cfg.root, "train"), transform=train_tf, loader=read_bytes),
        ImageFolder(os.path.join(cfg.root, "val"), transform=val_tf, loader=read_bytes),
    )


def map_loader(
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
    """A DataLoader over a map-style data set: per-epoch seeded order and per-sample seeded augmentation
    (`EpochSampler` + `SeededDataset`), DDP shards, the last incomplete training batch dropped."""
    if train and distributed:
        base = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    elif train:
        base = RandomSampler(dataset, generator=torch.Generator())
    else:
        base = ShardSampler(len(dataset), rank, world_size)
    workers, batch = cfg.num_workers, cfg.batch_size if train else eval_batch_size(cfg)
    return DataLoader(
        SeededDataset(dataset, seed, augment=train),
        batch_size=batch,
        sampler=EpochSampler(base, seed),
        num_workers=workers,
        pin_memory=_pin(cfg, device),
        persistent_workers=cfg.persistent_workers and workers > 0,
        drop_last=train and len(base) >= batch,  # a last batch of 1 breaks BatchNorm at 1x1 resolution
        # Worker base seeds come from this generator, not the global RNG the training loop seeds per epoch.
        generator=torch.Generator().manual_seed(seed),
    )


def _pin(cfg: DataConfig, device: torch.device) -> bool:
    return device.type == "cuda" if cfg.pin_memory is None else cfg.pin_memory


def _stream_loader(stream: ShardStream, cfg: DataConfig, device: torch.device, seed: int) -> DataLoader:
    workers = cfg.num_workers
    return DataLoader(
        stream,
        batch_size=None,  # the stream batches (in its workers, into shared memory)
        num_workers=workers,
        pin_memory=_pin(cfg, device),
        persistent_workers=cfg.persistent_workers and workers > 0,  # the epoch reaches them through shared memory
        generator=torch.Generator().manual_seed(seed),
    )


def build_image_loaders(
    cfg: DataConfig,
    *,
    device: torch.device | str,
    seed: int,
    distributed: bool = False,
    rank: int = 0,
    world_size: int = 1,
    autoaugment: bool = False,
    channels_last: bool = False,
) -> tuple[DeviceLoader, DeviceLoader, DataInfo]:
    """ImageNet training and evaluation loaders yielding normalized float32 (N, 3, S, S) batches on `device`
    (channels_last when asked), with `len()`, `set_epoch` and the last pass's data wait (`last_wait`)."""
    device = torch.device(device)
    if not distributed:
        rank, world_size = 0, 1
    if cfg.decoder == "dali":
        check_dali(cfg, device)
        from .dali import build_dali_loaders

        return build_dali_loaders(cfg, device=device, seed=seed, rank=rank, world_size=world_size,
                                  channels_last=channels_last)  # fmt: skip
    shard = {"seed": seed, "rank": rank, "world_size": world_size}
    if cfg.format == "webdataset":
        train, val, info = _shard_loaders(cfg, device, autoaugment, **shard)
    else:
        train_set, val_set = folder_datasets(cfg, autoaugment)
        _check_classes(cfg, len(train_set.classes))
        check_batch_fits(cfg, len(train_set), world_size)
        kw = {"device": device, "distributed": distributed, **shard}
        train, val = map_loader(train_set, cfg, train=True, **kw), map_loader(val_set, cfg, train=False, **kw)
        info = DataInfo(len(train_set.classes), 3, cfg.image_size, len(train_set), len(val_set))
    norm = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "channels_last": channels_last}
    return DeviceLoader(train, device, **norm), DeviceLoader(val, device, **norm), info


def _shard_loaders(cfg: DataConfig, device: torch.device, autoaugment: bool, *, seed: int, rank: int, world_size: int):
    train_set, val_set = ShardSet(os.path.join(cfg.root, "train")), ShardSet(os.path.join(cfg.root, "val"))
    _check_classes(cfg, len(train_set.classes))
    check_batch_fits(cfg, len(train_set), world_size)
    common = {"seed": seed, "rank": rank, "world_size": world_size, "num_workers": cfg.num_workers}
    decoder, size = worker_decoder(cfg), cfg.image_size
    train = ShardStream(
        train_set, TrainDecode(size, decoder, cfg.jpeg_draft, autoaugment), train=True,
        batch_size=cfg.batch_size, shuffle_buffer=cfg.shuffle_buffer, **common,
    )  # fmt: skip
    val = ShardStream(
        val_set, EvalDecode(size, decoder, cfg.jpeg_draft), train=False, batch_size=eval_batch_size(cfg), **common
    )
    info = DataInfo(len(train_set.classes), 3, cfg.image_size, len(train_set), len(val_set))
    return _stream_loader(train, cfg, device, seed), _stream_loader(val, cfg, device, seed), info


def _check_classes(cfg: DataConfig, found: int) -> None:
    if cfg.num_classes is not None and cfg.num_classes != found:
        raise DataError(f"data.num_classes={cfg.num_classes} but {cfg.root} holds {found} classes")


def image_calibration(cfg: DataConfig, n: int, seed: int = 0) -> Tensor:
    """`n` ImageNet training images as evaluation sees them (resize, centre crop, normalized float32 NCHW, on
    the CPU): a seeded choice of indices, the same images whichever storage format holds them."""
    decode = EvalDecode(cfg.image_size, worker_decoder(cfg), cfg.jpeg_draft)
    if cfg.format == "webdataset":
        shards = ShardSet(os.path.join(cfg.root, "train"))
        total, read = len(shards), lambda i: shards.read(i)[0]
    else:
        train_set = folder_datasets(cfg, autoaugment=False)[0]
        total, read = len(train_set), lambda i: read_bytes(train_set.samples[i][0])
    if not 1 <= n <= total:
        raise DataError(f"quant.calib_images={n} must be between 1 and the {total} training images")
    chosen = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    batch = torch.stack([decode(read(int(i))) for i in chosen])
    return DeviceLoader([], "cpu", IMAGENET_MEAN, IMAGENET_STD).normalize(batch)
