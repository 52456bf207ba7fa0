"""Progress for a person watching, silence for batch jobs: whether anyone watches, a sweep's live status line with
elapsed time and ETA, and whether a trial draws progress bars. A leaf: every layer may use it."""

from __future__ import annotations

import os
import sys
import time


def interactive() -> bool:
    """Whether a person is watching: stderr is a terminal and this is not a SLURM or submitit batch job."""
    batch = any(k in os.environ for k in ("SLURM_JOB_ID", "SUBMITIT_FOLDER", "SUBMITIT_EXECUTOR"))
    return sys.stderr.isatty() and not batch


def want_progress() -> bool:
    """Whether a trial draws progress bars: a person is watching (see `interactive`) and this is rank 0."""
    return interactive() and os.environ.get("RANK", "0") == "0"


def duration(seconds: float) -> str:
    """12s, 4m05s, 2h03m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """One status line per sweep: `<label>  <counts>  elapsed 1m02s  ETA 3m10s`.

    The ETA assumes the remaining work goes at the pace of the finished work so far (shown once something
    finished). A live rich line when a person is watching; otherwise a plain line whenever the counts change, and
    at least once a minute.
    """

    def __init__(self, label: str, total: int, live: bool | None = None) -> None:
        self.label, self.total, self.t0 = label, total, time.monotonic()
        self.last, self.last_time, self.live = "", 0.0, None
        if interactive() if live is None else live:
            from rich.live import Live

            self.live = Live(refresh_per_second=2, transient=False)
            self.live.start()

    def timing(self, done: int) -> str:
        elapsed = time.monotonic() - self.t0
        text = f"elapsed {duration(elapsed)}"
        if 0 < done < self.total:
            text += f"  ETA {duration(elapsed / done * (self.total - done))}"
        return text

    def show(self, counts: str, done: int) -> None:
        if self.live is not None:
            self.live.update(f"[bold]{self.label}[/bold]  {counts}  {self.timing(done)}")
            return
        if counts != self.last or time.monotonic() - self.last_time > 60:
            print(f"[{self.label}] {counts}  {self.timing(done)}", flush=True)
            self.last, self.last_time = counts, time.monotonic()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
