"""data.decoder=dali: NVIDIA DALI decodes, crops and resizes the JPEGs on the GPU (nvJPEG), for the folder format.

The files are read in the folder path's own per-epoch order (the same samplers list each rank's indices), but
the crops are DALI's (`decoders.image_random_crop`, seeded per (seed, epoch, rank)), not torchvision's: a trial
with dali sees the same images in the same order with different crops. The pipeline follows NVIDIA's ResNet-50
reference (DALI's docs/examples/use_cases/pytorch/resnet50/main.py) with the paper's crop ranges; it is rebuilt
each epoch so that an epoch's draws depend on the epoch alone (resumable at epoch boundaries). Output: uint8
(N, S, S, 3) on the GPU, normalized by `DeviceLoader` like every other decoder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch import Tensor

from .config import IMAGENET_MEAN, IMAGENET_STD, DataConfig, DataError, DataInfo, check_batch_fits
from .decode import EVAL_RESIZE, RATIO, SCALE
from .device import DeviceLoader
from .sampling import derive_seed

NVJPEG_DEVICE_PADDING, NVJPEG_HOST_PADDING = 211025920, 140544512  # NVIDIA's reference: fewer reallocations


class DaliLoader:
    """Batches (uint8 (N, S, S, 3) on the GPU, int64 labels) of one rank, from a DALI pipeline built per epoch."""

    def __init__(self, files: list[tuple[str, int]], order, cfg: DataConfig, *, train: bool, seed: int, rank: int,
                 device: torch.device) -> None:  # fmt: skip
        self.files, self.order, self.cfg, self.train = files, order, cfg, train
        self.seed, self.rank, self.device, self.epoch = seed, rank, device, 0
        self.batch_size = cfg.batch_size if train else (cfg.eval_batch_size or 2 * cfg.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.order)
        return max(1, n // self.batch_size) if self.train else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        indices = [int(i) for i in self.order]
        pipe = self._pipeline([self.files[i][0] for i in indices], [self.files[i][1] for i in indices])
        policy = LastBatchPolicy.DROP if self.train and len(indices) >= self.batch_size else LastBatchPolicy.PARTIAL
        for out in DALIGenericIterator([pipe], ["data", "label"], reader_name="Reader", last_batch_policy=policy):
            yield out[0]["data"], out[0]["label"].squeeze(-1).long()

    def _pipeline(self, files: list[str], labels: list[int]):
        from nvidia.dali import fn, pipeline_def, types

        size, train = self.cfg.image_size, self.train

        @pipeline_def
        def graph():
            jpegs, label = fn.readers.file(files=files, labels=labels, random_shuffle=False, name="Reader")
            if train:
                images = fn.decoders.image_random_crop(
                    jpegs, device="mixed", output_type=types.RGB, random_area=list(SCALE),
                    random_aspect_ratio=list(RATIO), num_attempts=10,
                    device_memory_padding=NVJPEG_DEVICE_PADDING, host_memory_padding=NVJPEG_HOST_PADDING,
                )  # fmt: skip
                images = fn.resize(images, resize_x=size, resize_y=size, interp_type=types.INTERP_TRIANGULAR)
                mirror = fn.random.coin_flip(probability=0.5)
            else:
                images = fn.decoders.image(jpegs, device="mixed", output_type=types.RGB)
                short = int(size * EVAL_RESIZE)
                images = fn.resize(images, size=[short, short], mode="not_smaller", interp_type=types.INTERP_TRIANGULAR)
                mirror = False
            images = fn.crop_mirror_normalize(
                images, dtype=types.UINT8, output_layout="HWC", crop=(size, size), mirror=mirror
            )
            return images, label.gpu()

        pipe = graph(
            batch_size=self.batch_size,
            num_threads=max(1, self.cfg.num_workers),
            device_id=self.device.index or 0,
            seed=derive_seed(self.seed, self.epoch, self.rank, "dali") % 2**31,
        )
        pipe.build()
        return pipe


def build_dali_loaders(
    cfg: DataConfig, *, device: torch.device, seed: int, rank: int, world_size: int, channels_last: bool
) -> tuple[DeviceLoader, DeviceLoader, DataInfo]:
    """DALI training and evaluation loaders over root/train and root/val, normalized on `device`."""
    from torch.utils.data import DistributedSampler, RandomSampler
    from torchvision.datasets import ImageFolder

    from .sampling import EpochSampler, ShardSampler

    train_set = ImageFolder(os.path.join(cfg.root, "train"), loader=os.fspath)  # file list only, nothing decoded
    val_set = ImageFolder(os.path.join(cfg.root, "val"), loader=os.fspath)
    check_batch_fits(cfg, len(train_set), world_size)
    if cfg.num_classes is not None and cfg.num_classes != len(train_set.classes):
        raise DataError(f"data.num_classes={cfg.num_classes} but {cfg.root} holds {len(train_set.classes)} classes")
    if world_size > 1:
        base = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    else:
        base = RandomSampler(train_set, generator=torch.Generator())
    order = _Indices(EpochSampler(base, seed))
    common = {"cfg": cfg, "seed": seed, "rank": rank, "device": device}
    train = DaliLoader(train_set.samples, order, train=True, **common)
    val = DaliLoader(val_set.samples, _Indices(ShardSampler(len(val_set), rank, world_size)), train=False, **common)
    norm = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "channels_last": channels_last}
    info = DataInfo(len(train_set.classes), 3, cfg.image_size, len(train_set), len(val_set))
    return DeviceLoader(train, device, **norm), DeviceLoader(val, device, **norm), info


class _Indices:
    """A sampler's indices for the epoch (EpochSampler yields (epoch, index) keys: the index is kept)."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return (key[1] if isinstance(key, tuple) else key for key in self.sampler)
