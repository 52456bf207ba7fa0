"""Batches onto the device: uint8 host batches copied (pinned, on a side stream) and normalized there, and the
seconds the training loop waited for each batch (`data_wait_s`), measured per pass."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .sampling import set_epoch

_log = logging.getLogger(__name__)

WAIT_WARN_FRACTION = 0.10  # above this share of an epoch's training time spent waiting, the loop is data-bound


@dataclass
class DataWait:
    """Seconds one pass over a loader spent blocked waiting for its next batch (host wall clock).

    `first_s` is the wait for the first batch (worker start-up, first decodes); `seconds` includes it.
    """

    seconds: float = 0.0
    first_s: float = 0.0
    batches: int = 0

    def fraction(self, epoch_seconds: float) -> float:
        """The share of `epoch_seconds` (the pass's wall time, steps included) spent waiting; 0 for no time."""
        return self.seconds / epoch_seconds if epoch_seconds > 0 else 0.0


def timed(batches: Iterable, wait: DataWait) -> Iterator:
    """Yield from `batches`, adding to `wait` the time each `next()` blocked: what a consumer waited for data."""
    it = iter(batches)
    while True:
        start = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        took = time.perf_counter() - start
        if wait.batches == 0:
            wait.first_s = took
        wait.seconds += took
        wait.batches += 1
        yield batch


class DeviceLoader:
    """Wraps a loader of uint8 (N, H, W, 3) or (N, 3, H, W) batches: copies each to `device` and yields normalized
    float32 (N, 3, H, W) batches, channels_last when asked, measuring the wait for each host batch (`last_wait`).

    On CUDA the copy of batch k+1 (from pinned memory) and its normalization run on a side stream while the
    training step of batch k runs (timm's PrefetchLoader design); the main stream waits for that stream only
    when it takes the batch. The arithmetic is ToTensor's and Normalize's, in their order (x / 255, - mean,
    / std), so on the CPU the batches equal today's float pipeline's bit for bit.
    """

    def __init__(
        self,
        loader,
        device: torch.device | str,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        channels_last: bool = False,
    ) -> None:
        self.loader, self.device, self.channels_last = loader, torch.device(device), channels_last
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.last_wait = DataWait()

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        set_epoch(self.loader, epoch)

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 (N, H, W, 3) or (N, 3, H, W) on the device -> float32 (N, 3, H, W): x / 255, minus mean, over std."""
        if x.shape[-1] == 3:  # NHWC bytes (the decoders') read as NCHW: channels_last strides for free
            x = x.permute(0, 3, 1, 2)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=memory_format)
        out.copy_(x)  # the conversion and any layout change in one pass
        return out.div_(255).sub_(self.mean).div_(self.std)  # elementwise, in place: the layout is kept

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.last_wait = DataWait()
        batches = timed(self.loader, self.last_wait)
        if self.device.type == "cuda":
            yield from self._prefetched(batches)
            return
        for x, y in batches:
            yield self.normalize(x.to(self.device)), y.to(self.device)

    def _prefetched(self, batches: Iterator) -> Iterator[tuple[Tensor, Tensor]]:
        stream = torch.cuda.Stream(self.device)
        ready = None
        for x, y in batches:
            stream.wait_stream(torch.cuda.current_stream(self.device))  # a batch already on the GPU (DALI) is ready
            with torch.cuda.stream(stream):
                nxt = self.normalize(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)
            if ready is not None:
                yield ready
            torch.cuda.current_stream(self.device).wait_stream(stream)
            for t in nxt:  # made on the side stream, used on the main one: keep the allocator from reusing it early
                t.record_stream(torch.cuda.current_stream(self.device))
            ready = nxt
        if ready is not None:
            yield ready


def last_wait(loader) -> DataWait | None:
    """The `DataWait` of `loader`'s latest pass, or None for a loader that does not measure it."""
    return getattr(loader, "last_wait", None)


def wait_record(
    loader,
    epoch_seconds: float,
    epoch: int | None = None,
    warn: Callable[[str], None] | None = None,
    reduce: Callable[[float], float] | None = None,
) -> dict[str, float]:
    """The epoch's `data_wait_s` and `data_wait_frac` (share of `epoch_seconds`) for its metrics line, warning
    (through `warn`, default the log) above `WAIT_WARN_FRACTION`; {} for a loader that does not measure it.

    `reduce` combines this process's wait over processes (the training loop passes the maximum over DDP ranks: the
    slowest rank holds the others at the next collective); every process must then call it.
    """
    wait = last_wait(loader)
    if wait is None:
        return {}
    seconds = wait.seconds if reduce is None else reduce(wait.seconds)
    fraction = seconds / epoch_seconds if epoch_seconds > 0 else 0.0
    if fraction > WAIT_WARN_FRACTION:
        where = f"epoch {epoch}: " if epoch is not None else ""
        (warn or _log.warning)(
            f"{where}the training loop waited {seconds:.1f} s of {epoch_seconds:.1f} s ({100 * fraction:.0f}%) "
            f"for data (first batch {wait.first_s:.1f} s): data-bound; raise data.num_workers, use "
            "data.decoder=torchvision or data.format=webdataset"
        )
    return {"data_wait_s": seconds, "data_wait_frac": fraction}


def wait_summary(epochs: Iterable[tuple[float, float]]) -> dict[str, float | int]:
    """result.json's summary of (data_wait_s, epoch seconds) per epoch: the total wait, its share of the total
    training time, the worst epoch's share and how many epochs were over `WAIT_WARN_FRACTION`; {} for none."""
    pairs = [(float(w), float(s)) for w, s in epochs]
    if not pairs:
        return {}
    waited, total = sum(w for w, _ in pairs), sum(s for _, s in pairs)
    shares = [w / s if s > 0 else 0.0 for w, s in pairs]
    return {
        "data_wait_s": waited,
        "data_wait_frac": waited / total if total > 0 else 0.0,
        "data_wait_max_epoch_frac": max(shares),
        "data_bound_epochs": sum(f > WAIT_WARN_FRACTION for f in shares),
    }
