"""Seeded sampling shared by every loader: stable seeds, per-epoch orders, rank shards, per-sample RNG."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts, e.g. (seed, epoch, "order"); the same on every machine and run."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def seeded_generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from `derive_seed(*parts)`."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def set_epoch(loader, epoch: int) -> None:
    """Make the next pass over `loader` the one of `epoch`: its order and augmentation depend on (seed, epoch)."""
    # The loader itself, its sampler (map-style data sets) or its data set (streams such as shards.ShardStream).
    for target in (loader, getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
        if hasattr(target, "set_epoch"):
            target.set_epoch(epoch)
            return
    raise TypeError(f"{type(loader).__name__} has no set_epoch (nor a sampler or data set with one)")


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


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample `index`'s random transforms in `epoch`: the same whichever worker, format or rank loads it."""
    return derive_seed(seed, epoch, index, "sample")


def seeded_call(fn, item, seed: int):
    """`fn(item)` under the CPU RNG seeded with `seed`, leaving the caller's RNG state as it was.

    Seeds the CPU generator alone: the same draws as `torch.manual_seed(seed)` (which also seeds every other
    device type and costs ~0.25 ms, a tenth of a JPEG decode, per sample) and no accelerator's RNG is touched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return fn(item)


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
        return seeded_call(self.dataset.__getitem__, index, sample_seed(self.seed, epoch, index))
