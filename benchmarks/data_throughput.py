"""Training-pipeline images/s per CPU core: torchvision's hand-written ImageFolder pipeline vs the harness's uint8 path.

Builds an ImageFolder of real JPEG photos (random crops of scikit-learn's china.jpg and flower.jpg resized to
ImageNet-like 500x375, 375x500 and 500x333, quality 90) in a temporary folder and runs one training epoch
through each pipeline with the same worker count, batch and resolution:

  baseline   ImageFolder + RandomResizedCrop(S) + RandomHorizontalFlip + ToTensor + Normalize, float32 batches
  harness    build_loaders(data.name=imagenet, data.decoder=D): the same crops (torchvision's draws), uint8
             batches handed to the device, where DeviceLoader normalizes them (on a GPU: a few kernels)

images/s per core = images / CPU seconds of the loader's processes (main process + its worker processes, from
getrusage: robust to other load on a shared machine). Passes are interleaved and repeated; medians are printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from repvgg_search.data import DataConfig, build_loaders
from repvgg_search.data.config import IMAGENET_MEAN, IMAGENET_STD
from repvgg_search.data.photos import make_photo_folder


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000, help="training images (two classes)")
    p.add_argument("--workers", type=int, default=2, help="loader worker processes, the same for every pipeline")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3, help="interleaved passes per pipeline (medians reported)")
    p.add_argument("--root", default=None, help="reuse or keep the photo folder here (default: a temporary one)")
    return p.parse_args()


def baseline_loader(root: Path, args: argparse.Namespace) -> DataLoader:
    """What users write by hand: torchvision transforms producing normalized float32 tensors in the workers."""
    from torchvision import datasets
    from torchvision import transforms as T

    tf = T.Compose(
        [
            T.RandomResizedCrop(args.image_size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = datasets.ImageFolder(str(root / "train"), transform=tf)
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True)


def harness_loader(root: Path, args: argparse.Namespace, decoder: str, draft: bool = False):
    cfg = DataConfig(
        name="imagenet",
        root=str(root),
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        persistent_workers=False,  # workers end with the pass: their CPU time is then counted
        decoder=decoder,
        jpeg_draft=draft,
    )
    return build_loaders(cfg, device="cpu", seed=0)[0]


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_pass(loader) -> tuple[int, float, float]:
    """(images, CPU seconds, wall seconds) of one full pass; worker processes are joined (and counted) at its end."""
    cpu, wall, images = _cpu_seconds(), time.perf_counter(), 0
    for x, _ in loader:
        images += x.shape[0]
    return images, _cpu_seconds() - cpu, time.perf_counter() - wall


def _pipelines(root: Path, args: argparse.Namespace) -> dict[str, tuple[object, str]]:
    """name -> (loader, decoder or '' for the baseline); host = the uint8 batches handed to the device copy."""
    out = {"baseline (torchvision float32)": (baseline_loader(root, args), "")}
    for decoder, draft in (("pil", False), ("pil", True), ("torchvision", False)):
        label = decoder + ("+draft" if draft else "")
        device_loader = harness_loader(root, args, decoder, draft)
        out[f"harness {label} (uint8 to device)"] = (device_loader.loader, label)
        if decoder == "torchvision":  # the same pipeline with normalization on this CPU, for a CPU-only trial
            out[f"harness {label} + normalize on the CPU"] = (device_loader, "")
    return out


def main() -> None:
    args = _args()
    torch.set_num_threads(1)  # the main process only receives batches (and normalizes one line): one thread
    print(f"data throughput: {args.images} JPEG photos (~500x375, quality 90), RandomResizedCrop({args.image_size})")
    print(f"batch {args.batch_size}, {args.workers} worker(s), {os.cpu_count()} CPU cores, torch {torch.__version__}")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        if not (root / "train").is_dir():
            t = time.perf_counter()
            make_photo_folder(root, {"train": args.images // 2, "val": 4})
            print(f"wrote {args.images} training JPEGs in {time.perf_counter() - t:.1f} s")
        pipelines = _pipelines(root, args)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in pipelines}
        for _ in range(args.repeats):
            for name, (loader, _) in pipelines.items():
                images, cpu, wall = one_pass(loader)
                runs[name].append((images / cpu, images / wall))
    per_core = {name: statistics.median(r[0] for r in rs) for name, rs in runs.items()}
    for name, rs in runs.items():
        wall = statistics.median(r[1] for r in rs)
        print(f"{name:>42}: {per_core[name]:7.1f} images/s per core, {wall:7.1f} images/s wall")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    baseline_name = next(iter(pipelines))
    best = max((n for n in pipelines if pipelines[n][1]), key=per_core.get)
    b, h = per_core[baseline_name], per_core[best]
    summary = f"decoder {pipelines[best][1]}, baseline {b:.1f}, harness {h:.1f}"
    print(f"data: harness/baseline {h / b:.2f} images/s per core ({summary})")


if __name__ == "__main__":
    main()
