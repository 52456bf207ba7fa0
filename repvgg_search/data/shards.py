"""ImageNet as webdataset tar shards: the converter (`python -m repvgg_search.data.shards SRC DST --shard-size N`)
and the seeded, rank-sharded, resumable stream that reads them (`ShardStream`).

Shards are read sequentially, the access pattern cluster file systems serve well (the webdataset design). The
converter writes each split's images in a seeded random order (so one shard holds many classes), keeps the
original file bytes (no re-encoding), names every sample after its ImageFolder index, and writes, per split,
`members.npy` (shard, byte offset, size and label of each index: random access for calibration) and, last,
`index.json`. A sample's augmentation is seeded by (seed, epoch, index), as in the folder format, so both
formats give every image the same crop in the same epoch; only the order differs.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, default_collate, get_worker_info

from ..errors import BadInputError, check_int, exit_on_bad_input
from .config import SHARD_INDEX, DataError, read_shard_index
from .sampling import derive_seed, sample_seed, seeded_call

SHARD_NAME = "shard-{:06d}.tar"
MEMBERS = "members.npy"  # int64 (count, 4): shard, data offset, size, label of the sample with that index
PLAN = "plan.json"  # written first: a rerun into the same folder must be the same conversion to resume it
FORMAT = "repvgg-search webdataset shards"
VERSION = 1


def shard_plan(count: int, shard_size: int, seed: int, shuffle: bool) -> list[list[int]]:
    """Which ImageFolder indices go into each shard: a seeded permutation (`shuffle`) or index order, cut into
    runs of `shard_size`."""
    order = np.random.default_rng(seed).permutation(count) if shuffle else np.arange(count)
    return [order[i : i + shard_size].tolist() for i in range(0, count, shard_size)]


def convert(src: str | Path, dst: str | Path, shard_size: int, seed: int = 0, splits=("train", "val")) -> dict:
    """Write the ImageFolder tree `src` (`src/<split>/<class>/<image>`) as shards under `dst/<split>/`.

    Resumable: shards are written under a temporary name and renamed when complete, so a rerun after an
    interruption writes only the missing ones. Returns {split: {"count", "shards", "bytes"}}.
    """
    check_int(shard_size, "--shard-size", 1, "images per shard", error=BadInputError)
    summary = {}
    for split in splits:
        folder = Path(src, split)
        if not folder.is_dir():
            raise BadInputError(f"SRC={src}: {folder} is missing; expected <SRC>/{split}/<class>/<image>")
        summary[split] = _convert_split(folder, Path(dst, split), shard_size, seed, shuffle=split == "train")
    return summary


def _convert_split(folder: Path, out: Path, shard_size: int, seed: int, shuffle: bool) -> dict:
    from torchvision.datasets import ImageFolder

    found = ImageFolder(str(folder), loader=_read_bytes)  # the file list and labels today's folder path uses
    plan = {"format": FORMAT, "version": VERSION, "count": len(found.samples), "shard_size": shard_size}
    plan.update(seed=seed if shuffle else None, classes=found.classes, source=str(folder.resolve()))
    out.mkdir(parents=True, exist_ok=True)
    _claim(out, plan)
    members = np.zeros((len(found.samples), 4), dtype=np.int64)
    shards = []
    for number, indices in enumerate(shard_plan(len(found.samples), shard_size, seed, shuffle)):
        path = out / SHARD_NAME.format(number)
        if not path.exists():  # present means complete: it was renamed into place after its last byte
            _write_shard(path, indices, found.samples)
        for index, offset, size, label in _scan_shard(path):
            members[index] = (number, offset, size, label)
        shards.append({"name": path.name, "count": len(indices), "bytes": path.stat().st_size})
    _atomic_write(out / MEMBERS, lambda f: np.save(f, members))
    index = {**plan, "shards": shards, "members": MEMBERS}
    _atomic_write(out / SHARD_INDEX, lambda f: f.write(json.dumps(index, indent=1).encode()))
    return {"count": len(found.samples), "shards": len(shards), "bytes": sum(s["bytes"] for s in shards)}


def _claim(out: Path, plan: dict) -> None:
    """Record this conversion's plan in `out`, refusing a folder that holds another conversion's shards."""
    path = out / PLAN
    if path.exists():
        old = json.loads(path.read_text())
        keys = sorted(k for k in plan if k != "source" and old.get(k) != plan[k])  # the same tree may move
        if keys:
            raise BadInputError(f"DST={out} holds shards of another conversion (differs in {keys}); use an empty DST")
    else:
        _atomic_write(path, lambda f: f.write(json.dumps(plan).encode()))


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_shard(path: Path, indices: list[int], samples: list[tuple[str, int]]) -> None:
    import webdataset as wds

    def write(f) -> None:
        with wds.TarWriter(f, encoder=False, mtime=0.0) as sink:  # mtime fixed: the same tree gives the same bytes
            for index in indices:
                file, label = samples[index]
                ext = Path(file).suffix.lower().lstrip(".") or "img"
                sink.write({"__key__": f"{index:09d}", ext: _read_bytes(file), "cls": str(label).encode()})

    _atomic_write(path, write)


def _scan_shard(path: Path) -> Iterator[tuple[int, int, int, int]]:
    """(index, data offset, size, label) of each image in a shard, from its tar headers."""
    pending: dict[int, list] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            entry = pending.setdefault(int(key), [None, None, None])
            if ext == "cls":
                entry[2] = int(tar.extractfile(member).read())
            else:
                entry[0], entry[1] = member.offset_data, member.size
    for index, (offset, size, label) in pending.items():
        yield index, offset, size, label


def _atomic_write(path: Path, write: Callable) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ShardSet:
    """A converted split: its index, the path of each shard, and random access to one sample by index."""

    def __init__(self, split_dir: str | Path) -> None:
        self.dir = Path(split_dir)
        self.index = read_shard_index(str(self.dir))
        self.paths = [str(self.dir / s["name"]) for s in self.index["shards"]]
        self.counts = [s["count"] for s in self.index["shards"]]
        self.classes: list[str] = self.index["classes"]
        self._members = None

    def __len__(self) -> int:
        return self.index["count"]

    def member(self, index: int) -> tuple[int, int, int, int]:
        """Where sample `index` lies: (shard number, byte offset of its image, image size, label)."""
        if self._members is None:
            self._members = np.load(self.dir / self.index["members"])
        shard, offset, size, label = (int(v) for v in self._members[index])
        return shard, offset, size, label

    def read(self, index: int) -> tuple[bytes, int]:
        """The file bytes and label of sample `index` (seek and read: no scan of the shard)."""
        shard, offset, size, label = self.member(index)
        with open(self.paths[shard], "rb") as f:
            f.seek(offset)
            return f.read(size), label


class ShardStream(IterableDataset):
    """Batches of (uint8 (N, H, W, 3) or (N, 3, H, W), labels) from a split's shards, for a DataLoader with
    batch_size=None.

    Training: each epoch permutes the shards with (seed, epoch), pads the list to a multiple of `world_size`
    and gives rank r every world_size-th shard (so DDP ranks read disjoint shards); a rank's loader workers
    split its shards the same way; each worker shuffles its stream in a buffer of `shuffle_buffer` samples
    seeded by (seed, epoch, rank, worker). Every rank yields exactly len() batches (ceil(count / world_size)
    // batch_size, DDP needs equal step counts), shared among its workers in proportion to their images; a
    worker whose share ends mid-shard leaves the rest out, one that runs short re-reads its shards. The
    epoch's order (and those few images at its edges) depends on (seed, epoch, world_size, num_workers);
    each image's crop only on (seed, epoch, index).
    Evaluation: shards in order, an exact partition across ranks, no shuffling, every sample once.
    The epoch sits in shared memory, so `set_epoch` reaches persistent workers.
    """

    def __init__(
        self,
        shards: ShardSet,
        decode: Callable[[bytes], torch.Tensor],
        *,
        train: bool,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
    ) -> None:
        self.shards, self.decode, self.train = shards, decode, train
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.workers, self.shuffle_buffer = max(1, num_workers), shuffle_buffer
        self._epoch = multiprocessing.Value("q", 0)
        if train and math.ceil(len(shards.paths) / world_size) < self.workers:
            raise DataError(
                f"data.format=webdataset: {len(shards.paths)} shards cannot feed {world_size} rank(s) x "
                f"{self.workers} worker(s); allowed: data.num_workers <= {len(shards.paths) // world_size}, "
                "or convert again with a smaller --shard-size"
            )

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = epoch

    @property
    def epoch(self) -> int:
        return self._epoch.value

    def rank_shards(self, epoch: int) -> list[int]:
        """This rank's shard numbers in `epoch` (training: seeded permutation, padded; evaluation: in order)."""
        n = len(self.shards.paths)
        if not self.train:
            return list(range(self.rank, n, self.world_size))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch, "shards")))
        order = order.tolist()
        order += order[: math.ceil(n / self.world_size) * self.world_size - n]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        if self.train:
            return math.ceil(len(self.shards) / self.world_size) // self.batch_size
        mine = self.rank_shards(0)
        return sum(
            math.ceil(sum(self.shards.counts[s] for s in mine[w :: self.workers]) / self.batch_size)
            for w in range(self.workers)
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        mine = self.rank_shards(epoch)[worker::workers]
        if not self.train:
            yield from self._batches(self._samples(mine, None), epoch, None)
            return
        quota = self.worker_quotas(epoch, workers)[worker]
        yield from self._batches(self._cycle(mine, epoch, worker), epoch, quota)

    def worker_quotas(self, epoch: int, workers: int) -> list[int]:
        """Training batches each of `workers` loader workers yields in `epoch`: len() split in proportion to the
        images in each worker's shards (largest remainders round up), so a worker re-reads or leaves out fewer
        than batch_size of its images."""
        shards = self.rank_shards(epoch)
        images = [sum(self.shards.counts[s] for s in shards[w::workers]) for w in range(workers)]
        steps = len(self)
        exact = [steps * n / sum(images) for n in images]
        quotas = [int(e) for e in exact]
        by_remainder = sorted(range(workers), key=lambda w: quotas[w] - exact[w])
        for w in by_remainder[: steps - sum(quotas)]:
            quotas[w] += 1
        return quotas

    def _cycle(self, mine: list[int], epoch: int, worker: int) -> Iterator[dict]:
        """The worker's shards, buffer-shuffled, again and again (a fresh seeded shuffle per pass)."""
        for turn in range(sys.maxsize):
            rng = random.Random(derive_seed(self.seed, epoch, self.rank, worker, turn, "buffer"))
            shards = mine if turn == 0 else rng.sample(mine, len(mine))
            yield from self._samples(shards, rng)

    def _samples(self, shards: list[int], rng: random.Random | None) -> Iterator[dict]:
        import webdataset as wds

        samples = wds.tarfile_samples([{"url": self.shards.paths[s]} for s in shards])
        return samples if rng is None else wds.shuffle(self.shuffle_buffer, rng=rng)(samples)

    def _batches(self, samples: Iterator[dict], epoch: int, quota: int | None) -> Iterator:
        batch, made = [], 0
        if quota == 0:
            return
        for sample in samples:
            index = int(sample["__key__"])
            data = next(v for k, v in sample.items() if k != "cls" and not k.startswith("__"))
            seeded = self.train  # evaluation decodes are not random
            image = (
                seeded_call(self.decode, data, sample_seed(self.seed, epoch, index)) if seeded else self.decode(data)
            )
            batch.append((image, int(sample["cls"])))
            if len(batch) == self.batch_size:
                yield default_collate(batch)  # in a worker: straight into shared memory
                batch, made = [], made + 1
                if made == quota:
                    return
        if batch and quota is None:
            yield default_collate(batch)


@exit_on_bad_input
def main(argv: list[str] | None = None) -> None:
    """Command line: convert an ImageFolder tree into shards and print what was written."""
    p = argparse.ArgumentParser(prog="python -m repvgg_search.data.shards", description=__doc__.splitlines()[0])
    p.add_argument("src", help="ImageFolder root holding train/<class>/<image> and val/<class>/<image>")
    p.add_argument("dst", help="output folder: use it as data.root with data.format=webdataset")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (ImageNet: ~110 MB at 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the order in which training images are written")
    p.add_argument("--splits", nargs="+", default=["train", "val"])
    args = p.parse_args(argv)
    for split, s in convert(args.src, args.dst, args.shard_size, args.seed, tuple(args.splits)).items():
        print(f"{split}: {s['count']} images in {s['shards']} shards, {s['bytes'] / 1e6:.1f} MB -> {args.dst}/{split}")


if __name__ == "__main__":
    main()
