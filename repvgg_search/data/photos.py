"""An ImageFolder tree of real JPEG photos, offline: random crops of the two photos scikit-learn ships (china.jpg
and flower.jpg, 640x427) resized to ImageNet-like sizes, for tests, benchmarks and GPU checks of the data path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZES = ((500, 375), (375, 500), (500, 333))  # the commonest ImageNet sizes (about 500 px on the long side)


def sample_photos() -> list[np.ndarray]:
    """scikit-learn's two sample photos as (427, 640, 3) uint8 arrays (china, flower)."""
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def make_photo_folder(
    root: str | Path,
    per_class: dict[str, int],
    *,
    seed: int = 0,
    sizes: tuple[tuple[int, int], ...] = SIZES,
    quality: int = 90,
    classes: int = 2,
) -> Path:
    """Write root/<split>/c<k>/<i>.jpg for each split in `per_class` ({split: images per class}); returns root.

    Image i of class k is a seeded random crop (at least half of each side) of photo k % 2, resized (bicubic) to
    one of `sizes` (w, h) in turn and saved as JPEG at `quality`: real photographic content and JPEG statistics.
    """
    photos, rng, root = sample_photos(), np.random.default_rng(seed), Path(root)
    for split, count in per_class.items():
        for k in range(classes):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            photo = photos[k % len(photos)]
            for i in range(count):
                _crop(photo, rng, sizes[i % len(sizes)]).save(folder / f"{i:05d}.jpg", "JPEG", quality=quality)
    return root


def _crop(photo: np.ndarray, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    h, w = photo.shape[:2]
    ch, cw = int(rng.integers(h // 2, h + 1)), int(rng.integers(w // 2, w + 1))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return Image.fromarray(photo[top : top + ch, left : left + cw]).resize(size, Image.Resampling.BICUBIC)
