"""A trial's per-image correctness on the validation set as a packed bit file (`val_correct.bits`), numpy only:
what a trial writes while it runs, kept apart from the statistics of `per_image` (scipy, pandas), whose import a
trial's process would pay for nothing."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .. import files
from ..errors import BadInputError

CORRECT_FILE = "val_correct.bits"  # in the trial folder, beside result.json
MAGIC = b"RVGBITS1"


def order_digest(ids: Iterable[Any]) -> str:
    """A short fingerprint of the validation images in evaluation order (file paths, or dataset indices): the
    first 16 hex digits of SHA-256 over their text, one per line."""
    h = hashlib.sha256()
    for i in ids:
        h.update(f"{i}\n".encode())
    return h.hexdigest()[:16]


def pack_correct(correct: np.ndarray, order: str, split: str = "val") -> bytes:
    """The bit file's bytes: MAGIC, a 4-byte little-endian header length, a JSON header (`images`, `order`, `split`,
    `bitorder`), then numpy.packbits of the correctness (big bit order, the last byte zero-padded): 6,250 bytes of
    bits for 50,000 images."""
    bits = np.asarray(correct)
    if bits.ndim != 1 or not (bits.dtype == bool or np.isin(bits, (0, 1)).all()):
        raise BadInputError("per-image correctness must be a flat array of booleans (or 0/1), one per image")
    header = json.dumps({"images": len(bits), "order": order, "split": split, "bitorder": "big"}).encode()
    return MAGIC + len(header).to_bytes(4, "little") + header + np.packbits(bits.astype(bool)).tobytes()


def write_correct(path: str | Path, correct: np.ndarray, order: str, split: str = "val") -> Path:
    """Write the bit file atomically (`files.atomic_write`): a kill mid-write leaves the previous file or none, never
    a torn one."""
    path = Path(path)
    data = pack_correct(correct, order, split)
    files.atomic_write(path, lambda f: f.write(data))
    return path


def read_correct(path: str | Path, images: int | None = None, order: str | None = None) -> np.ndarray:
    """The per-image correctness (bool array) of a bit file; refuses a file that is not one, is truncated, or whose
    image count or order fingerprint differs from the ones given."""
    path = Path(path)
    data = path.read_bytes()
    if data[: len(MAGIC)] != MAGIC or len(data) < len(MAGIC) + 4:
        raise BadInputError(f"{path} is not a per-image correctness file (no {MAGIC.decode()} header)")
    size = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "little")
    start = len(MAGIC) + 4 + size
    try:
        header = json.loads(data[len(MAGIC) + 4 : start])
    except ValueError as err:
        raise BadInputError(f"{path}: unreadable header ({err})") from err
    n = int(header["images"])
    if len(data) - start != math.ceil(n / 8):
        raise BadInputError(f"{path}: {len(data) - start} bytes of bits for {n} images (truncated or padded)")
    if images is not None and n != images:
        raise BadInputError(f"{path} holds {n} images, expected {images}")
    if order is not None and header["order"] != order:
        raise BadInputError(f"{path} was written for image order {header['order']}, expected {order}")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=start), count=n).astype(bool)
