"""Devices: which device a process runs on (a name, a stable identity, versions), and a lock that keeps speed
measurements apart from training on the same device.

Training and evaluation hold a device's lock shared, epoch by epoch; a speed measurement holds it exclusively,
so nothing of ours trains on a device while it is being timed. The locks are files under REPVGG_LOCK_DIR (default
a folder in the machine's temp dir), taken with `flock`: the kernel releases them when a process dies, and every
process on one machine (trials of any sweep) sees the same ones. A turnstile in front of the lock gives a waiting
measurement priority over new epochs, so measurements are never starved by a stream of overlapping epochs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import torch

from .errors import BadInputError
from .locks import flock


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity, e.g. a SLURM job's cores)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto` means the first CUDA device when one is visible, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BadInputError(f"device={device!r} is not a device; allowed: auto, cpu, cuda, cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise BadInputError(f"device={device!r} is not supported; allowed: auto, cpu, cuda, cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device={device!r} but no CUDA device is visible; allowed here: auto, cpu")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise BadInputError(f"device={device!r} but {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev


def device_name(device: torch.device) -> str:
    """A human-readable name of the device (GPU model or CPU model)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def device_key(device: torch.device) -> str:
    """A stable identity of the physical device on this machine (the same whatever CUDA_VISIBLE_DEVICES says)."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        ident = str(getattr(props, "uuid", "")) or f"{props.name}:{device.index}"  # uuid: torch >= 2.1
        return f"cuda-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"
    return "cpu"


def driver_version() -> str | None:
    """The NVIDIA driver's version (nvidia-smi), or None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def environment(device: torch.device) -> dict[str, object]:
    """What the device and the libraries are: recorded beside every speed figure and every trial."""
    env: dict[str, object] = {
        "device": device.type,
        "device_name": device_name(device),
        "host": platform.node(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "driver": driver_version() if device.type == "cuda" else None,
        "cpu_count": cpu_cores(),
    }
    return env


@contextlib.contextmanager
def cuda_flags(device: torch.device, *, tf32: bool, cudnn_benchmark: bool | None = None) -> Iterator[None]:
    """TF32 (cuDNN convolutions and matmuls) and cuDNN autotuning as given, inside; the process's own restored
    after. A no-op off CUDA."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    if cudnn_benchmark is not None:
        torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def training_environment(device: torch.device, train: object) -> dict[str, object]:
    """Everything that changes a trial's numbers besides its config: device, versions, threads, and the numeric
    switches in force while it trains (TF32 makes a CUDA "float32" run not float32)."""
    env = environment(device)
    env.update(
        threads=torch.get_num_threads(),
        deterministic=getattr(train, "deterministic", None),
        amp=getattr(train, "amp", None),
        channels_last=getattr(train, "channels_last", None) and device.type == "cuda",
    )
    if device.type == "cuda":
        env.update(
            tf32_conv=torch.backends.cudnn.allow_tf32,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
    return env


def lock_dir() -> Path:
    """Where device locks live: REPVGG_LOCK_DIR, else a per-user folder in the machine's temp dir."""
    path = Path(os.environ.get("REPVGG_LOCK_DIR") or Path(tempfile.gettempdir()) / f"repvgg-search-{os.getuid()}")
    path.mkdir(parents=True, exist_ok=True)
    return path


class DeviceLock:
    """A reader-writer lock on one device, across processes: `shared()` for training, `exclusive()` for timing."""

    def __init__(self, device: torch.device, folder: Path | None = None) -> None:
        folder = Path(folder) if folder else lock_dir()
        key = device_key(device)
        self.path, self.turnstile = folder / f"{key}.lock", folder / f"{key}.turnstile"

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Work on the device beside others, but never beside a speed measurement."""
        with contextlib.ExitStack() as held:
            with flock(self.turnstile, shared=True):  # waits while a measurement is queued or running
                held.enter_context(flock(self.path, shared=True))
            yield

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The device alone: waits for the epochs in progress to end; new ones wait until this ends."""
        with flock(self.turnstile), flock(self.path):
            yield


def git_commit(repo: Path | None = None) -> str | None:
    """The commit of the code that ran (with `+dirty` when the tree had changes), or None outside git."""
    repo = repo or Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():  # an installed package: no commit of ours to report
        return None
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def library_versions() -> dict[str, str | None]:
    """Versions of Python and of the libraries that shape results."""
    names = ["torch", "torchvision", "numpy", "hydra-core", "omegaconf", "fvcore", "wandb", "submitit", "optuna"]
    out: dict[str, str | None] = {"python": platform.python_version(), "repvgg-search": _version("repvgg-search")}
    out.update({n: _version(n) for n in names})
    out["cuda"] = torch.version.cuda
    return out


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
