"""Which data a trial uses (`DataConfig`, the `data:` config node) and its validation, without loading anything."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInputError, check_int

DATASETS = ("digits", "cifar10", "cifar100", "imagenet", "synthetic")
SYNTHETIC_DEFAULT_CLASSES = 10
MIN_IMAGE_SIZE = 32  # five stride-2 stages: 32 px is the smallest input that still reaches the last stage at 1x1
# The largest side accepted: 4x the largest the paper trains or tests at (224; 320 at most in later RepVGG work).
# Activations grow with the square of the side: at 4096 px a default trial filled 17 GB of a 23 GB machine in a
# minute, where 1024 px needs 16 times less. A documented bound refused before anything is allocated.
MAX_IMAGE_SIZE = 1024
CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_TRAIN_COUNT = 50_000  # torchvision's CIFAR-10/100 training split
NATIVE_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}
DIGITS_COUNT = 1797  # images in scikit-learn's load_digits, used to check val_fraction without loading it
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
DECODERS = ("pil", "torchvision", "dali")
FORMATS = ("folder", "webdataset")
SHARD_INDEX = "index.json"  # written last by `python -m repvgg_search.data.shards`: a split without it is incomplete
# Fields that choose how images are read (decoder, storage, shuffle buffer), not which images, crops or seeds a
# trial uses: like num_workers and the device they stay out of the trial id (trial/settings.py NOT_IN_ID), which
# also keeps the ids of trials that do not set them.
READ_FIELDS = frozenset({"decoder", "format", "jpeg_draft", "shuffle_buffer"})


class DataError(BadInputError):
    """A data setting is invalid or the data is missing; the message names the Hydra key and the fix."""


@dataclass
class DataConfig:
    """Which data set to train and evaluate on, and how to load it."""

    # Data set: "digits" (scikit-learn's bundled 8x8 handwritten digits, offline), "cifar10", "cifar100",
    # "imagenet" (an ImageFolder tree root/train, root/val) or "synthetic" (seeded random tensors).
    name: str = "digits"
    # Directory holding the data (cifar*, imagenet); unused by digits and synthetic. None = not set.
    root: str | None = None
    # CIFAR only: download into `root` when missing (needs network). ImageNet is never downloaded.
    download: bool = False
    # Side in pixels of the square images the network sees; >= 32 (five stride-2 stages).
    image_size: int = 32
    # Training images per batch and per process (the global batch is batch_size * world_size); >= 1.
    batch_size: int = 64
    # Evaluation images per batch and per process; None = 2 * batch_size.
    eval_batch_size: int | None = None
    # DataLoader worker processes (cifar*, imagenet); 0 = load in the training process. Digits and synthetic
    # live in memory and never use workers.
    num_workers: int = 0
    # Pin host memory for faster host-to-GPU copies; None = on exactly when the device is CUDA.
    pin_memory: bool | None = None
    # Keep DataLoader workers alive between epochs (only takes effect when num_workers > 0).
    persistent_workers: bool = True
    # Digits: fraction of the 1797 images held out for evaluation, stratified by class; in [0.01, 0.9].
    val_fraction: float = 0.2
    # Seed of the digits train/val split and of the synthetic data's content (not of the training order).
    split_seed: int = 0
    # Classes; None = the data set's own (digits/cifar10 10, cifar100 100, imagenet: its folders, synthetic 10).
    num_classes: int | None = None
    # Synthetic: number of training and evaluation images; >= 1.
    synthetic_train_size: int = 512
    synthetic_val_size: int = 128
    # Digits and synthetic: largest random translation, in pixels at image_size, applied to each training
    # image (drawn per image and epoch); 0 = no augmentation. Evaluation images are never shifted. Off by
    # default: in the proxy recipe it slowed the relu_in_branches variant's escape from its early plateau.
    translate: int = 0
    # ImageNet: what decodes and crops the JPEGs. "pil" (PIL in the loader workers: today's images, bit for bit),
    # "torchvision" (torchvision.io.decode_image and uint8 tensor resizing in the workers: the same crops, pixels
    # within interpolation error, faster), "dali" (NVIDIA DALI on the GPU: needs CUDA and `pip install
    # nvidia-dali-cuda130`; folder format only, DALI's own seeded crops and order).
    decoder: str = "pil"
    # ImageNet storage: "folder" (an ImageFolder tree root/train, root/val) or "webdataset" (tar shards under
    # root/train and root/val, written by `python -m repvgg_search.data.shards SRC DST`).
    format: str = "folder"
    # decoder=pil: let libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale (PIL's Image.draft) when its crop still
    # covers image_size pixels at that scale; faster on large photos, pixels within interpolation error.
    jpeg_draft: bool = False
    # format=webdataset: training samples each loader worker holds to shuffle its stream of shards; >= 1.
    shuffle_buffer: int = 1000


@dataclass(frozen=True)
class DataInfo:
    """What the model needs to know about the data: classes, input channels and size, split sizes."""

    num_classes: int
    in_channels: int
    image_size: int
    train_size: int
    val_size: int


def validate_data(cfg: DataConfig, device: object | None = None) -> None:
    """Raise `DataError` naming the field and its allowed values, without loading any data.

    `device` is where training will run (a torch.device or its name); with it, device-only options are checked.
    """
    if cfg.name not in DATASETS:
        raise DataError(f"data.name={cfg.name!r} is unknown; allowed: {', '.join(DATASETS)}")
    _check_reading(cfg, device)
    check_int(
        cfg.image_size,
        "data.image_size",
        MIN_IMAGE_SIZE,
        "the network halves the resolution in 5 stages",
        error=DataError,
    )
    if cfg.image_size > MAX_IMAGE_SIZE:
        raise DataError(
            f"data.image_size={cfg.image_size} is above the largest allowed, {MAX_IMAGE_SIZE} px (activation memory "
            f"grows with its square); allowed: a multiple of {MIN_IMAGE_SIZE} in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]"
        )
    if cfg.image_size % MIN_IMAGE_SIZE:
        raise DataError(
            f"data.image_size={cfg.image_size} must be a multiple of {MIN_IMAGE_SIZE}: the five stride-2 stages halve "
            f"it five times (e.g. {cfg.image_size // MIN_IMAGE_SIZE * MIN_IMAGE_SIZE or MIN_IMAGE_SIZE} or "
            f"{(cfg.image_size // MIN_IMAGE_SIZE + 1) * MIN_IMAGE_SIZE})"
        )
    check_int(cfg.batch_size, "data.batch_size", 1, error=DataError)
    if cfg.eval_batch_size is not None:
        check_int(cfg.eval_batch_size, "data.eval_batch_size", 1, "or null for 2 * data.batch_size", error=DataError)
    check_int(cfg.num_workers, "data.num_workers", 0, error=DataError)
    check_int(cfg.translate, "data.translate", 0, "pixels; 0 turns augmentation off", error=DataError)
    if not 0.01 <= cfg.val_fraction <= 0.9:
        raise DataError(f"data.val_fraction={cfg.val_fraction!r} must be in [0.01, 0.9]")
    _check_num_classes(cfg)
    if cfg.name == "synthetic":
        check_int(cfg.synthetic_train_size, "data.synthetic_train_size", 1, error=DataError)
        check_int(cfg.synthetic_val_size, "data.synthetic_val_size", 1, error=DataError)
    elif cfg.name in CIFAR_DIRS:
        _check_cifar_root(cfg)
    elif cfg.name == "imagenet" and cfg.format == "webdataset":
        _check_shard_root(cfg.root)
    elif cfg.name == "imagenet":
        _check_imagenet_root(cfg.root)
    check_batch_fits(cfg, known_train_size(cfg))


def known_train_size(cfg: DataConfig) -> int | None:
    """Training images of the data sets whose size is known without loading or scanning them: digits, synthetic,
    CIFAR (torchvision's training split, 50 000 images); None for ImageNet (`count_train_images` scans it)."""
    if cfg.name == "synthetic":
        return cfg.synthetic_train_size
    if cfg.name == "digits":
        return DIGITS_COUNT - round(DIGITS_COUNT * cfg.val_fraction)
    if cfg.name in CIFAR_DIRS:
        return CIFAR_TRAIN_COUNT
    return None


def in_memory_bytes(cfg: DataConfig) -> int:
    """Host memory the in-memory data sets (digits, synthetic) hold once loaded at `image_size`: float32 3-channel
    tensors of every image (0 for data read from files)."""
    per_image = 3 * cfg.image_size**2 * 4
    if cfg.name == "digits":
        return DIGITS_COUNT * per_image
    if cfg.name == "synthetic":
        return (cfg.synthetic_train_size + cfg.synthetic_val_size) * per_image
    return 0


def count_train_images(cfg: DataConfig) -> int | None:
    """The image files under an ImageNet folder's `root/train/<class>/` (a directory scan: seconds for ImageNet's
    1.28 M files on a local disk); None for other data sets and formats."""
    if cfg.name != "imagenet" or cfg.format != "folder" or not cfg.root:
        return None
    train = os.path.join(cfg.root, "train")
    total = 0
    with os.scandir(train) as classes:
        for entry in classes:
            if entry.is_dir():
                with os.scandir(entry.path) as images:
                    total += sum(1 for f in images if f.is_file() and not f.name.startswith("."))
    return total


def check_batch_fits(cfg: DataConfig, train_size: int | None, world_size: int = 1) -> None:
    """A batch cannot hold more images than the training set: the learning rate scales with the batch asked for,
    so a larger one would train at a rate for images that do not exist."""
    if train_size is not None and cfg.batch_size * world_size > train_size:
        raise DataError(
            f"data.batch_size={cfg.batch_size} (x {world_size} process(es)) exceeds the {train_size} training images of "
            f"data.name={cfg.name}; allowed: at most {train_size // world_size} per process"
        )


def expected_num_classes(cfg: DataConfig) -> int:
    """Classes of the data set, known without loading it (ImageNet: the class folders under root/train)."""
    if cfg.num_classes is not None:
        return cfg.num_classes
    if cfg.name == "synthetic":
        return SYNTHETIC_DEFAULT_CLASSES
    if cfg.name in NATIVE_CLASSES:
        return NATIVE_CLASSES[cfg.name]
    if cfg.format == "webdataset":
        return len(read_shard_index(os.path.join(cfg.root, "train"))["classes"])
    return sum(1 for p in Path(cfg.root, "train").iterdir() if p.is_dir())


def _check_num_classes(cfg: DataConfig) -> None:
    if cfg.num_classes is None:
        return
    check_int(cfg.num_classes, "data.num_classes", 1, "or null for the data set's own", error=DataError)
    native = NATIVE_CLASSES.get(cfg.name)
    if native is not None and cfg.num_classes != native:
        raise DataError(f"data.num_classes={cfg.num_classes} but {cfg.name} has {native} classes; use null or {native}")


def _check_cifar_root(cfg: DataConfig) -> None:
    how = f"set data.root=<dir> and data.download=true to fetch {cfg.name} into it (needs network)"
    if not cfg.root:
        raise DataError(f"data.root is not set for data.name={cfg.name}: {how}")
    folder = os.path.join(cfg.root, CIFAR_DIRS[cfg.name])
    if not cfg.download and not (os.path.isdir(folder) and os.listdir(folder)):
        raise DataError(f"data.root={cfg.root!r}: {cfg.name} not found (expected {folder}/); {how}")


def _check_imagenet_root(root: str | None) -> None:
    layout = "expected an ImageFolder layout: <root>/train/<class>/<image> and <root>/val/<class>/<image>"
    if not root:
        raise DataError(f"data.root is not set for data.name=imagenet; {layout}")
    for split in ("train", "val"):
        folder = os.path.join(root, split)
        if not os.path.isdir(folder) or not os.listdir(folder):
            raise DataError(f"data.root={root!r}: {folder} is missing or empty; {layout}")


def _check_reading(cfg: DataConfig, device: object | None) -> None:
    """The ImageNet reading options: known values, only where they apply, and what `dali` needs."""
    if cfg.decoder not in DECODERS:
        raise DataError(f"data.decoder={cfg.decoder!r} is unknown; allowed: {', '.join(DECODERS)}")
    if cfg.format not in FORMATS:
        raise DataError(f"data.format={cfg.format!r} is unknown; allowed: {', '.join(FORMATS)}")
    check_int(cfg.shuffle_buffer, "data.shuffle_buffer", 1, "samples per loader worker", error=DataError)
    for key, value, default in (("decoder", cfg.decoder, "pil"), ("format", cfg.format, "folder")):
        if value != default and cfg.name != "imagenet":
            raise DataError(
                f"data.{key}={value} applies to data.name=imagenet only; allowed for data.name={cfg.name}: {default}"
            )
    if cfg.jpeg_draft and cfg.decoder != "pil":
        raise DataError(f"data.jpeg_draft=true needs data.decoder=pil (PIL's Image.draft), not {cfg.decoder}")
    if cfg.decoder == "dali":
        check_dali(cfg, device)


def check_dali(cfg: DataConfig, device: object | None = None) -> None:
    """Refuse data.decoder=dali where it cannot run: a device that is not CUDA, webdataset format, or no DALI."""
    kind = getattr(device, "type", None) or (str(device).split(":")[0] if device is not None else None)
    if kind is not None and kind != "cuda":
        raise DataError(
            f"data.decoder=dali decodes on a CUDA GPU, not on device {device}; allowed here: pil, torchvision"
        )
    if cfg.format != "folder":
        raise DataError(
            f"data.decoder=dali reads data.format=folder only; allowed with data.format={cfg.format}: pil, torchvision"
        )
    if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
        raise DataError(
            "data.decoder=dali needs NVIDIA DALI: pip install nvidia-dali-cuda130 (GPU machines only); "
            "allowed without it: pil, torchvision"
        )


def read_shard_index(split_dir: str) -> dict:
    """The index of a converted split (classes, image count, shards), refusing a missing or incomplete one."""
    path = os.path.join(split_dir, SHARD_INDEX)
    how = "write the shards with: python -m repvgg_search.data.shards <ImageFolder root> <data.root> --shard-size N"
    try:
        with open(path) as f:
            index = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"data.format=webdataset: {path} is missing or unreadable ({exc}); {how}") from None
    if not index.get("shards") or not index.get("count"):
        raise DataError(f"data.format=webdataset: {path} lists no shards; {how}")
    return index


def _check_shard_root(root: str | None) -> None:
    if not root:
        raise DataError("data.root is not set for data.format=webdataset: set it to the converter's output folder")
    for split in ("train", "val"):
        read_shard_index(os.path.join(root, split))
