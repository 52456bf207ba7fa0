"""ImageNet's uint8 path on real JPEG photos: today's images bit for bit (pil), within interpolation error
(torchvision, draft), device normalization, the loop's data wait, and the reading options' validation."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler

from repvgg_search.data import (
    READ_FIELDS,
    DataConfig,
    DataError,
    DataWait,
    DeviceLoader,
    EpochSampler,
    SeededDataset,
    build_loaders,
    calibration_images,
    set_epoch,
    validate_data,
    wait_record,
    wait_summary,
)
from repvgg_search.data.config import IMAGENET_MEAN, IMAGENET_STD
from repvgg_search.data.decode import draft_scale
from repvgg_search.data.photos import make_photo_folder

STD255 = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255  # normalized units -> pixel levels


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real JPEG photos (2 classes; 500x375, 375x500, 1200x900 and 160x120), plus a greyscale JPEG and an RGBA
    PNG in class c0: 26 training and 8 evaluation images."""
    root = make_photo_folder(
        tmp_path_factory.mktemp("photos"),
        {"train": 12, "val": 4},
        sizes=((500, 375), (375, 500), (1200, 900), (160, 120)),
    )
    grey = Image.open(root / "train" / "c0" / "00000.jpg").convert("L")
    grey.save(root / "train" / "c0" / "grey.jpg", quality=90)
    rgba = Image.open(root / "train" / "c1" / "00001.jpg").convert("RGBA")
    rgba.save(root / "train" / "c0" / "rgba.png")
    return root


def todays_loaders(root, size: int, batch: int, seed: int, autoaugment: bool) -> tuple[DataLoader, DataLoader]:
    """The float pipeline this path replaces, as it was: PIL images, torchvision transforms, ToTensor, Normalize."""
    from torchvision import datasets
    from torchvision import transforms as T

    train = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    train += [T.AutoAugment(T.AutoAugmentPolicy.IMAGENET)] if autoaugment else []
    tail = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    val_tf = T.Compose([T.Resize(int(size * 256 / 224)), T.CenterCrop(size), *tail])
    train_set = datasets.ImageFolder(str(root / "train"), transform=T.Compose(train + tail))
    val_set = datasets.ImageFolder(str(root / "val"), transform=val_tf)
    sampler = EpochSampler(RandomSampler(train_set, generator=torch.Generator()), seed)
    train_loader = DataLoader(SeededDataset(train_set, seed, True), batch_size=batch, sampler=sampler, drop_last=True)
    return train_loader, DataLoader(val_set, batch_size=2 * batch)


def epoch_batches(loader, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    set_epoch(loader, epoch)
    xs, ys = zip(*[(x.clone(), y.clone()) for x, y in loader])
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("autoaugment", [False, True])
def test_pil_decoder_gives_todays_batches_bit_for_bit(photos, autoaugment):
    cfg = DataConfig(name="imagenet", root=str(photos), image_size=64, batch_size=4)
    train, val, info = build_loaders(cfg, device="cpu", seed=3, autoaugment=autoaugment)
    old_train, old_val = todays_loaders(photos, 64, 4, 3, autoaugment)
    assert (info.num_classes, info.train_size, info.val_size) == (2, 26, 8)
    for epoch in (0, 1):
        new_x, new_y = epoch_batches(train, epoch)
        old_x, old_y = epoch_batches(old_train, epoch)
        assert new_x.dtype == torch.float32 and new_x.shape == (24, 3, 64, 64)
        assert torch.equal(new_y, old_y) and torch.equal(new_x, old_x)
    new_val, old_val_x = next(iter(val)), next(iter(old_val))
    assert torch.equal(new_val[0], old_val_x[0]) and torch.equal(new_val[1], old_val_x[1])


@pytest.mark.parametrize("changes", [{"decoder": "torchvision"}, {"jpeg_draft": True}])
def test_other_decoders_agree_on_geometry_within_interpolation_error(photos, changes):
    """Same crops, flips and labels; pixels differ by interpolation only: on average under 3 of 255 levels per
    image, where two different images of this set differ by over 20."""
    cfg = DataConfig(name="imagenet", root=str(photos), image_size=64, batch_size=4)
    reference, ref_val, _ = build_loaders(cfg, device="cpu", seed=5)
    other, other_val, _ = build_loaders(dataclasses.replace(cfg, **changes), device="cpu", seed=5)
    for epoch in (0, 1):
        (ref_x, ref_y), (x, y) = epoch_batches(reference, epoch), epoch_batches(other, epoch)
        assert torch.equal(ref_y, y)
        error = ((x - ref_x) * STD255).abs().mean(dim=(1, 2, 3))
        apart = ((x - ref_x.roll(1, 0)) * STD255).abs().mean(dim=(1, 2, 3))
        assert error.max() < 3.0 < 20.0 < apart.min(), (error.max(), apart.min())
    (ref_vx, _), (vx, _) = next(iter(ref_val)), next(iter(other_val))
    assert ((vx - ref_vx) * STD255).abs().mean(dim=(1, 2, 3)).max() < 3.0


@pytest.mark.parametrize("autoaugment", [False, True])
def test_torchvision_decoder_is_torchvisions_own_transforms_bit_for_bit(photos, autoaugment):
    """The decoder's channels-last crop-resize (the fast path of PyTorch's uint8 antialiased kernel) and its
    (H, W, 3) layout change no pixel: each image equals torchvision's v2 resized_crop, flip and AutoAugment (or
    resize and centre crop) of `decode_image`'s tensor under the same seed."""
    from torchvision import transforms as T
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms import RandomResizedCrop
    from torchvision.transforms.v2 import functional as F

    from repvgg_search.data.decode import RATIO, SCALE, EvalDecode, TrainDecode

    train, val = TrainDecode(64, "torchvision", autoaugment=autoaugment), EvalDecode(64, "torchvision")
    policy = T.AutoAugment(T.AutoAugmentPolicy.IMAGENET) if autoaugment else None
    files = sorted((photos / "train").glob("*/*.jpg"))
    assert len(files) >= 20
    for i, path in enumerate(files):
        data = path.read_bytes()
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        torch.manual_seed(i)
        top, left, h, w = RandomResizedCrop.get_params(image, list(SCALE), list(RATIO))
        expected = F.resized_crop(image, top, left, h, w, [64, 64], antialias=True)
        expected = expected.flip(-1) if bool(torch.rand(1) < 0.5) else expected
        expected = policy(expected) if policy is not None else expected
        torch.manual_seed(i)
        got = train(data)
        assert got.shape == (64, 64, 3) and got.is_contiguous() and got.dtype == torch.uint8
        assert torch.equal(got, expected.permute(1, 2, 0)), path
        expected = F.center_crop(F.resize(image, int(64 * 256 / 224), antialias=True), [64, 64])
        assert torch.equal(val(data), expected.permute(1, 2, 0)), path


def test_draft_decodes_large_jpegs_at_a_reduced_scale_only_where_the_crop_allows(photos):
    big = photos / "train" / "c0" / "00002.jpg"  # 1200x900
    image = Image.open(big)
    assert draft_scale(image, (1200, 900), (224, 224)) == 4  # 900 / 4 = 225 >= 224 pixels still
    image.load()
    assert image.size == (300, 225)
    assert draft_scale(Image.open(big), (400, 300), (224, 224)) == 1  # 300 / 2 < 224: full scale
    assert draft_scale(Image.open(photos / "train" / "c0" / "rgba.png"), (500, 375), (32, 32)) == 1  # not a JPEG


def test_device_loader_normalizes_either_layout_and_gives_channels_last_when_asked():
    gen = torch.Generator().manual_seed(0)
    nhwc = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8, generator=gen)
    batches = [(nhwc, torch.tensor([0, 1])), (nhwc.permute(0, 3, 1, 2).contiguous(), torch.tensor([0, 1]))]
    plain = list(DeviceLoader(batches, "cpu", IMAGENET_MEAN, IMAGENET_STD))
    last = list(DeviceLoader(batches, "cpu", IMAGENET_MEAN, IMAGENET_STD, channels_last=True))
    expected = (nhwc.permute(0, 3, 1, 2).float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD
    ).view(1, 3, 1, 1)
    for x, _ in plain + last:
        assert x.shape == (2, 3, 8, 8) and torch.allclose(x, expected, atol=1e-6)
    assert all(x.is_contiguous() for x, _ in plain)
    assert all(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() for x, _ in last)


def slow_source(batches: int, delay: float):
    for i in range(batches):
        time.sleep(delay)  # sleeps at least `delay`: a lower bound on the wait, whatever the machine's load
        yield torch.zeros(1, 32, 32, 3, dtype=torch.uint8), torch.tensor([i])


def test_data_wait_counts_the_consumers_blocked_time_and_not_its_steps():
    loader = DeviceLoader(list(slow_source(0, 0)), "cpu", IMAGENET_MEAN, IMAGENET_STD)
    loader.loader = slow_source(5, 0.02)
    start, step = time.perf_counter(), 0.05
    for _ in loader:
        time.sleep(step)  # the training step: not data wait
    elapsed = time.perf_counter() - start
    wait = loader.last_wait
    assert wait.batches == 5 and wait.first_s >= 0.02 and wait.seconds >= 5 * 0.02
    assert wait.seconds <= elapsed - 5 * step
    assert 0 < wait.fraction(elapsed) < 1


def test_tensor_loaders_measure_their_wait_too():
    train, _, _ = build_loaders(DataConfig(batch_size=100), device="cpu", seed=0)
    assert sum(1 for _ in train) == len(train) == train.last_wait.batches
    assert train.last_wait.seconds > 0


def test_wait_record_warns_above_ten_percent():
    class Measured:
        last_wait = DataWait(seconds=3.0, first_s=1.0, batches=10)

    warnings: list[str] = []
    record = wait_record(Measured(), 20.0, epoch=2, warn=warnings.append)
    assert record == {"data_wait_s": 3.0, "data_wait_frac": 0.15}
    assert len(warnings) == 1 and "epoch 2" in warnings[0] and "15%" in warnings[0] and "data-bound" in warnings[0]
    assert wait_record(Measured(), 40.0, warn=warnings.append)["data_wait_frac"] == 0.075 and len(warnings) == 1
    assert wait_record(object(), 10.0) == {}


def test_wait_record_logs_a_warning_by_default(caplog):
    class Measured:
        last_wait = DataWait(seconds=5.0, first_s=0.5, batches=3)

    with caplog.at_level(logging.WARNING, logger="repvgg_search.data.device"):
        wait_record(Measured(), 10.0, epoch=1)
    assert any("50%" in r.getMessage() for r in caplog.records)


def test_wait_summary_totals_the_epochs():
    summary = wait_summary([(1.0, 10.0), (3.0, 10.0), (0.0, 20.0)])
    assert summary == {
        "data_wait_s": 4.0,
        "data_wait_frac": 0.1,
        "data_wait_max_epoch_frac": 0.3,
        "data_bound_epochs": 1,
    }
    assert wait_summary([]) == {}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"decoder": "nvjpeg"}, "data.decoder='nvjpeg' is unknown; allowed: pil, torchvision, dali"),
        ({"format": "tfrecord"}, "data.format='tfrecord' is unknown; allowed: folder, webdataset"),
        ({"shuffle_buffer": 0}, "data.shuffle_buffer=0 must be an integer >= 1"),
        ({"name": "digits", "decoder": "torchvision"}, "data.decoder=torchvision applies to data.name=imagenet only"),
        ({"name": "cifar10", "format": "webdataset"}, "data.format=webdataset applies to data.name=imagenet only"),
        ({"decoder": "torchvision", "jpeg_draft": True}, "data.jpeg_draft=true needs data.decoder=pil"),
        ({"format": "webdataset"}, "index.json is missing or unreadable"),
    ],
)
def test_reading_options_are_validated(photos, changes, expected):
    cfg = dataclasses.replace(DataConfig(name="imagenet", root=str(photos)), **changes)
    with pytest.raises(DataError) as info:
        validate_data(cfg)
    assert expected in str(info.value)


def test_dali_is_refused_on_the_cpu(photos):
    cfg = DataConfig(name="imagenet", root=str(photos), decoder="dali")
    with pytest.raises(DataError, match="data.decoder=dali decodes on a CUDA GPU, not on device cpu"):
        validate_data(cfg, "cpu")
    with pytest.raises(DataError, match="decodes on a CUDA GPU"):
        build_loaders(cfg, device="cpu", seed=0)


@pytest.mark.skipif(importlib.util.find_spec("nvidia.dali") is not None, reason="NVIDIA DALI is installed here")
def test_dali_is_refused_when_not_installed(photos):
    with pytest.raises(DataError, match="needs NVIDIA DALI: pip install nvidia-dali-cuda130"):
        validate_data(DataConfig(name="imagenet", root=str(photos), decoder="dali"))


def test_calibration_images_are_todays(photos):
    """PTQ calibration sees the evaluation transform of the seeded choice of training images, as before."""
    from torchvision import datasets
    from torchvision import transforms as T

    cfg = DataConfig(name="imagenet", root=str(photos), image_size=64)
    images = calibration_images(cfg, 5, seed=1)
    tf = T.Compose([T.Resize(73), T.CenterCrop(64), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    train_set = datasets.ImageFolder(str(photos / "train"), transform=tf)
    chosen = torch.randperm(26, generator=torch.Generator().manual_seed(1))[:5].sort().values
    assert torch.equal(images, torch.stack([train_set[int(i)][0] for i in chosen]))


# Trial ids computed on main at e580305, before these fields existed (imagenet: a tree of one class folder).
GOLDEN_IDS = {"digits": "3ad384725937", "cifar10": "f381c0c786f3", "imagenet": "04757eb45fdd"}


def test_the_new_fields_keep_todays_trial_ids_in_not_in_id(tmp_path):
    from repvgg_search.trial import NOT_IN_ID, settings_from_config

    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        (tmp_path / split / "a" / "x.jpg").write_bytes(b"")  # the id needs the class count, not the images
    assert NOT_IN_ID["data"] >= READ_FIELDS
    configs = {
        "digits": {},
        "cifar10": {"data": {"name": "cifar10", "root": "/nowhere", "download": True, "batch_size": 128}},
        "imagenet": {"data": {"name": "imagenet", "root": str(tmp_path), "image_size": 224, "batch_size": 64}},
    }
    for name, cfg in configs.items():
        assert settings_from_config(cfg).trial_id == GOLDEN_IDS[name], name
    fast = {
        "data": {**configs["imagenet"]["data"], "decoder": "torchvision", "num_workers": 16},
        "train": {"compile": True},
    }
    assert settings_from_config(fast).trial_id == GOLDEN_IDS["imagenet"]
    assert {f.name for f in dataclasses.fields(DataConfig)} >= READ_FIELDS


def test_photo_folder_is_real_jpegs(photos):
    image = Image.open(photos / "train" / "c1" / "00000.jpg")
    assert image.format == "JPEG" and image.size == (500, 375)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 20  # a photo, not a flat or random field


@pytest.mark.slow
def test_throughput_benchmark_runs_and_ends_with_its_summary_line(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "data_throughput.py"
    cmd = [sys.executable, str(script), "--images", "16", "--batch-size", "4", "--workers", "0", "--repeats", "1"]
    proc = subprocess.run([*cmd, "--image-size", "64", "--root", str(tmp_path)], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("data: harness/baseline ") and " images/s per core (decoder " in last, last
    assert ", baseline " in last and ", harness " in last
