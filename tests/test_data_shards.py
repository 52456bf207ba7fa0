"""webdataset shards: the converter (resumable, refuses another conversion's folder), random access, and the
stream: the folder format's images and crops per epoch, seeded order, DDP rank shards, workers, evaluation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repvgg_search.data import DataConfig, DataError, build_loaders, calibration_images, expected_num_classes, set_epoch
from repvgg_search.data.photos import make_photo_folder
from repvgg_search.data.shards import MEMBERS, ShardSet, convert

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Real JPEG photos: 2 classes x 13 training and 2 x 3 evaluation images."""
    return make_photo_folder(tmp_path_factory.mktemp("tree"), {"train": 13, "val": 3})


@pytest.fixture(scope="module")
def shards(tree, tmp_path_factory):
    """`tree` as shards of 4 images (train: 7 shards, the last of 2; val: 2 shards)."""
    dst = tmp_path_factory.mktemp("shards")
    convert(tree, dst, shard_size=4, seed=0)
    return dst


def run_converter(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "repvgg_search.data.shards", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def shard_bytes(split_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(split_dir.glob("shard-*.tar"))}


@pytest.mark.slow
def test_converter_writes_shards_an_index_and_random_access(tree, tmp_path):
    proc = run_converter(str(tree), str(tmp_path / "out"), "--shard-size", "4")
    assert proc.returncode == 0, proc.stderr
    assert "train: 26 images in 7 shards" in proc.stdout and "val: 6 images in 2 shards" in proc.stdout
    index = json.loads((tmp_path / "out" / "train" / "index.json").read_text())
    assert index["count"] == 26 and index["classes"] == ["c0", "c1"] and [s["count"] for s in index["shards"]][-1] == 2
    from torchvision.datasets import ImageFolder

    folder, split = ImageFolder(str(tree / "train")), ShardSet(tmp_path / "out" / "train")
    for i, (path, label) in enumerate(folder.samples):  # every image's own bytes, found by its folder index
        assert split.read(i) == (Path(path).read_bytes(), label)
    first = json.loads((tmp_path / "out" / "train" / "index.json").read_text())["shards"][0]
    labels = {split.member(i)[3] for i in range(26) if split.member(i)[0] == 0}
    assert first["count"] == 4 and labels == {0, 1}  # the images were written shuffled: a shard mixes classes


@pytest.mark.slow
def test_converter_resumes_and_refuses_another_conversion(tree, tmp_path):
    dst = tmp_path / "out"
    convert(tree, dst, shard_size=4, seed=0)
    before = shard_bytes(dst / "train")
    (dst / "train" / "shard-000003.tar").unlink()  # as if interrupted before this shard was renamed into place
    (dst / "train" / "index.json").unlink()
    proc = run_converter(str(tree), str(dst), "--shard-size", "4")
    assert proc.returncode == 0, proc.stderr
    assert shard_bytes(dst / "train") == before  # the same plan: the missing shard again, byte for byte
    proc = run_converter(str(tree), str(dst), "--shard-size", "5")
    assert proc.returncode == 2 and "holds shards of another conversion (differs in ['shard_size'])" in proc.stderr
    proc = run_converter(str(tree), str(dst), "--shard-size", "0")
    assert proc.returncode == 2 and "--shard-size=0 must be an integer >= 1" in proc.stderr


def image_keys(x: torch.Tensor, y: torch.Tensor) -> list[tuple[int, str]]:
    return sorted((int(label), hashlib.sha1(image.numpy().tobytes()).hexdigest()) for image, label in zip(x, y))


def epoch_keys(loader, epoch: int) -> list[tuple[int, str]]:
    set_epoch(loader, epoch)
    return [k for x, y in loader for k in image_keys(x, y)]


def cfgs(tree: Path, shards: Path, **changes) -> tuple[DataConfig, DataConfig]:
    folder = DataConfig(name="imagenet", root=str(tree), image_size=32, batch_size=2, **changes)
    return folder, dataclasses.replace(folder, format="webdataset", root=str(shards))


def test_each_epoch_holds_the_folder_formats_images_and_crops(tree, shards):
    folder_cfg, shard_cfg = cfgs(tree, shards)
    folder, folder_val, _ = build_loaders(folder_cfg, device="cpu", seed=7)
    stream, stream_val, info = build_loaders(shard_cfg, device="cpu", seed=7)
    assert (info.num_classes, info.train_size, info.val_size) == (2, 26, 6) and len(stream) == len(folder) == 13
    for epoch in (0, 1):  # 26 images in batches of 2: each epoch sees every image once, crops keyed by index
        assert sorted(epoch_keys(stream, epoch)) == sorted(epoch_keys(folder, epoch))
    assert sorted(epoch_keys(stream_val, 0)) == sorted(epoch_keys(folder_val, 0))
    assert expected_num_classes(shard_cfg) == 2


def test_order_is_seeded_per_epoch_and_resumes_at_an_epoch_boundary(tree, shards):
    _, cfg = cfgs(tree, shards)
    stream = build_loaders(cfg, device="cpu", seed=1)[0]
    epoch0, epoch1 = epoch_keys(stream, 0), epoch_keys(stream, 1)
    assert epoch0 != epoch1 and sorted(epoch0) != sorted(epoch1)  # a new order and new crops
    resumed = build_loaders(cfg, device="cpu", seed=1)[0]  # a restart after epoch 0
    assert epoch_keys(resumed, 1) == epoch1 and epoch_keys(resumed, 0) == epoch0
    assert epoch_keys(build_loaders(cfg, device="cpu", seed=2)[0], 0) != epoch0


def test_persistent_workers_follow_set_epoch(tree, shards):
    _, cfg = cfgs(tree, shards, num_workers=2)
    persistent = build_loaders(cfg, device="cpu", seed=1)[0]
    fresh = build_loaders(dataclasses.replace(cfg, persistent_workers=False), device="cpu", seed=1)[0]
    single = build_loaders(dataclasses.replace(cfg, num_workers=0), device="cpu", seed=1)[0]
    for epoch in (0, 1, 0):
        keys = epoch_keys(persistent, epoch)
        assert keys == epoch_keys(fresh, epoch)  # the epoch reached the persistent workers
        # Workers share the 13 steps in proportion to their images; with even shard sizes and batches of 2 no
        # worker re-reads or leaves out an image, so the worker count changes the order only.
        assert sorted(keys) == sorted(epoch_keys(single, epoch))


@pytest.mark.parametrize("shard_size", [4, 5])  # 7 shards (padded to 8 for 2 ranks) and 6 shards (no padding)
def test_ranks_read_disjoint_shards_and_take_equal_steps(tree, tmp_path, shard_size):
    convert(tree, tmp_path, shard_size=shard_size, seed=0)
    _, cfg = cfgs(tree, tmp_path, num_workers=2)
    ranks = [build_loaders(cfg, device="cpu", seed=3, distributed=True, rank=r, world_size=2) for r in range(2)]
    trains = [r[0] for r in ranks]
    streams = [t.loader.dataset for t in trains]
    for epoch in (0, 1):
        mine = [set(s.rank_shards(epoch)) for s in streams]
        padded = len(set.union(*mine)) < sum(len(m) for m in mine)
        assert mine[0] | mine[1] == set(range(len(streams[0].shards.paths)))
        assert padded or not mine[0] & mine[1]
        counts = [sum(1 for _ in t) for t in trains]
        assert counts == [len(trains[0]), len(trains[1])] == [6, 6]  # ceil(26 / 2) // 2: DDP's equal step count
    evals = [sorted(epoch_keys(r[1], 0)) for r in ranks]
    whole = sorted(epoch_keys(build_loaders(cfg, device="cpu", seed=3)[1], 0))
    assert sorted(evals[0] + evals[1]) == whole and len(whole) == 6  # an exact partition: every image once


def test_too_few_shards_for_the_workers_is_refused(tree, shards):
    _, cfg = cfgs(tree, shards, num_workers=8)
    with pytest.raises(DataError, match=r"7 shards cannot feed 1 rank\(s\) x 8 worker\(s\); allowed: data.num_workers"):
        build_loaders(cfg, device="cpu", seed=0)


def test_calibration_reads_the_same_images_from_shards(tree, shards):
    folder_cfg, shard_cfg = cfgs(tree, shards)
    assert torch.equal(calibration_images(shard_cfg, 6, seed=2), calibration_images(folder_cfg, 6, seed=2))


def test_a_split_without_its_index_is_refused(tree, shards, tmp_path):
    os.symlink(shards / "train", tmp_path / "train")
    (tmp_path / "val").mkdir()  # the val split was never converted
    _, cfg = cfgs(tree, tmp_path)
    with pytest.raises(
        DataError, match=r"val/index.json is missing or unreadable .*python -m repvgg_search.data.shards"
    ):
        build_loaders(cfg, device="cpu", seed=0)
    assert (shards / "train" / MEMBERS).exists()
