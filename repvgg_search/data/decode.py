"""One image from its file bytes to a uint8 tensor, decoded by PIL or torchvision and cropped as torchvision crops.

Both decoders return (H, W, 3) uint8, PIL's own layout and the buffer libjpeg writes (torchvision's (3, H, W) is a
view of it), so collating a batch is a plain copy and the device reads the batch as channels_last NCHW for free;
`device.DeviceLoader` reads (N, H, W, 3) or (N, 3, H, W) (DALI's).

The crops are torchvision's own (`RandomResizedCrop.get_params`, then the flip's `torch.rand(1)`), drawn in the
order today's float pipeline draws them, so a sample seeded by `sampling.sample_seed` gets the same crop and flip
whichever decoder or storage format reads it. Normalization is left to the device (`device.DeviceLoader`): the
workers hand over uint8 pixels, a quarter of the float32 bytes, as timm's loader and FFCV do.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .config import DataError

_log = logging.getLogger(__name__)

SCALE, RATIO = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's defaults: the paper's (and timm's) recipe
EVAL_RESIZE = 256 / 224  # evaluation: resize the short side to image_size * 256 / 224, then centre-crop image_size
DRAFT_SCALES = (8, 4, 2)  # the DCT scalings PIL's Image.draft asks libjpeg for


def draft_scale(image: Image.Image, region: tuple[float, float], out: tuple[int, int]) -> int:
    """Put a lazily opened JPEG in draft mode at the largest 1/s (s = 8, 4, 2) at which `region` (w, h, source
    pixels) still holds at least `out` (w, h) pixels, so the resize after it only shrinks; returns s (1: none).

    libjpeg then runs its scaled inverse DCT (each 8x8 block straight to 8/s x 8/s pixels), skipping most of
    the decoding work; pixel i of the scaled image covers source pixels [i*s, (i+1)*s).
    """
    if image.format != "JPEG":
        return 1
    room = min(region[0] / out[0], region[1] / out[1])
    scale = next((s for s in DRAFT_SCALES if s <= room), 1)
    if scale == 1:
        return 1
    width, height = image.size
    got = image.draft("RGB", (width // scale, height // scale))
    return 1 if got is None else round(width / got[1][2])


def pil_to_tensor(image: Image.Image) -> Tensor:
    """An RGB PIL image as an (H, W, 3) uint8 tensor (one copy, no float conversion)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))


def _open(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def _tv_decode(data: bytes) -> Tensor:
    """(3, H, W) uint8 via torchvision.io.decode_image; PIL for a file torchvision cannot decode (e.g. BMP, TIFF)."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        _log.debug("torchvision cannot decode an image (%s): PIL decodes it", exc)
        return pil_to_tensor(_open(data).convert("RGB")).permute(2, 0, 1)


class TrainDecode:
    """bytes -> uint8 (S, S, 3): RandomResizedCrop(S) (scale 0.08-1, ratio
    3/4-4/3, bilinear), a horizontal flip with probability 1/2, then AutoAugment (ImageNet policy) when asked:
    today's training transforms."""

    def __init__(self, size: int, decoder: str = "pil", draft: bool = False, autoaugment: bool = False) -> None:
        if decoder not in ("pil", "torchvision"):
            raise DataError(f"data.decoder={decoder!r} does not decode in loader workers; allowed: pil, torchvision")
        self.size, self.decoder, self.draft = size, decoder, draft
        self.autoaugment = _autoaugment() if autoaugment else None

    def __call__(self, data: bytes) -> Tensor:
        return self._pil(data) if self.decoder == "pil" else self._torchvision(data)

    def _pil(self, data: bytes) -> Tensor:
        from torchvision.transforms import InterpolationMode, RandomResizedCrop
        from torchvision.transforms import functional as F

        image = _open(data)
        top, left, h, w = RandomResizedCrop.get_params(image, list(SCALE), list(RATIO))  # header size: no decode
        flip = bool(torch.rand(1) < 0.5)  # RandomHorizontalFlip's draw, after the crop's
        out = (self.size, self.size)
        scale = draft_scale(image, (w, h), out) if self.draft else 1
        image = image.convert("RGB")
        if scale > 1:  # the crop box in the scaled image's coordinates: fractional, which resize takes as is
            box = (left / scale, top / scale, (left + w) / scale, (top + h) / scale)
            image = image.resize(out, Image.Resampling.BILINEAR, box=box)
        else:  # exactly torchvision's resized_crop on a PIL image: crop, then resize
            image = F.resized_crop(image, top, left, h, w, list(out), InterpolationMode.BILINEAR)
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.autoaugment is not None:
            image = self.autoaugment(image)
        return pil_to_tensor(image)

    def _torchvision(self, data: bytes) -> Tensor:
        from torchvision.transforms import RandomResizedCrop

        image = _tv_decode(data)
        top, left, h, w = RandomResizedCrop.get_params(image, list(SCALE), list(RATIO))
        flip = bool(torch.rand(1) < 0.5)
        image = resize_crop_uint8(image, top, left, h, w, self.size).permute(1, 2, 0)  # (S, S, 3), no copy
        if flip:
            image = image.flip(1)
        if self.autoaugment is not None:  # torchvision's tensor AutoAugment reads (3, S, S): a view of the same pixels
            image = self.autoaugment(image.permute(2, 0, 1)).permute(1, 2, 0)
        return image.contiguous()  # (S, S, 3): collating it is then a plain copy


class EvalDecode:
    """bytes -> uint8 (S, S, 3): the short side resized (bilinear) to
    int(S * 256 / 224), then a centre crop of S: today's evaluation transforms. Nothing random."""

    def __init__(self, size: int, decoder: str = "pil", draft: bool = False) -> None:
        if decoder not in ("pil", "torchvision"):
            raise DataError(f"data.decoder={decoder!r} does not decode in loader workers; allowed: pil, torchvision")
        self.size, self.decoder, self.draft = size, decoder, draft
        self.resize = int(size * EVAL_RESIZE)

    def __call__(self, data: bytes) -> Tensor:
        if self.decoder == "torchvision":
            from torchvision.transforms.v2 import functional as F

            image = _tv_decode(data)
            image = resize_crop_uint8(
                image, 0, 0, image.shape[1], image.shape[2], resized_size(image.shape[:0:-1], self.resize)
            )
            return F.center_crop(image, [self.size, self.size]).permute(1, 2, 0).contiguous()
        return pil_to_tensor(self._pil(data))

    def _pil(self, data: bytes) -> Image.Image:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        image = _open(data)
        width, height = image.size
        out = resized_size((width, height), self.resize)
        scale = draft_scale(image, (width, height), out) if self.draft else 1
        image = image.convert("RGB")
        if scale > 1:  # the scaled image's last column and row may cover less than s source pixels: the box says so
            image = image.resize(out, Image.Resampling.BILINEAR, box=(0, 0, width / scale, height / scale))
        else:
            image = F.resize(image, self.resize, InterpolationMode.BILINEAR)
        return F.center_crop(image, [self.size, self.size])


def resize_crop_uint8(
    image: Tensor, top: int, left: int, height: int, width: int, size: int | tuple[int, int]
) -> Tensor:
    """torchvision's `resized_crop(..., antialias=True)` of a uint8 (3, H, W) image, bit for bit, about twice as
    fast: the crop is made one contiguous channels-last block first, the layout PyTorch's vectorized uint8
    antialiased bilinear kernel reads directly (a strided crop of the decoder's (H, W, 3) buffer takes a slower
    path). `size`: S (S x S) or (w, h). Returns (3, h, w), channels-last strided: `.permute(1, 2, 0)` is (h, w, 3)
    contiguous, with no copy."""
    out_w, out_h = (size, size) if isinstance(size, int) else size
    crop = image[:, top : top + height, left : left + width].unsqueeze(0)
    crop = crop.contiguous(memory_format=torch.channels_last)  # no copy when it already is (a whole decoded image)
    out = torch.nn.functional.interpolate(
        crop, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=True
    )
    return out[0]


def resized_size(size: tuple[int, int], short: int) -> tuple[int, int]:
    """(w, h) after resizing the short side of `size` (w, h) to `short`, rounded as torchvision's Resize(int)."""
    width, height = size
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def _autoaugment():
    from torchvision import transforms as T

    return T.AutoAugment(T.AutoAugmentPolicy.IMAGENET)
