"""One trial end to end: validate, train (resumable), evaluate, convert, check, profile, record.

`run_trial` runs (or resumes, or reports) a trial in its folder; `TrialRunner` is the same as a
`submitit.helpers.Checkpointable`, so a SLURM preemption or timeout requeues it and it resumes from the folder's
checkpoint. Every record it writes is a typed `schema.TrialRecord`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import submitit
import torch

from .. import checkpoints, devices, files
from ..analysis.bits import order_digest, write_correct
from ..data import WAIT_WARN_FRACTION, build_loaders, in_memory_bytes, wait_summary
from ..devices import DeviceLock, resolve_device, training_environment
from ..distributed import DistInfo, cleanup, gather_shards, init_distributed, unwrap, wrap_ddp
from ..errors import resource_error
from ..models import build_model
from ..profile import arch_sizes
from ..profile.memory import check_training_memory
from ..progress import want_progress
from ..schema import (
    DATA_WAIT_CONVENTION,
    MAC_CONVENTION,
    ArchBlock,
    Complexity,
    DataWaitBlock,
    Environment,
    Metrics,
    PerImage,
    Quant,
    Sizes,
    Status,
    Timings,
    TrialRecord,
    TrialSize,
    write_record,
)
from ..tracking import Tracker
from ..training import (
    build_optimizer,
    build_scheduler,
    compile_model,
    configure_backends,
    evaluate,
    make_scaler,
    prepare_model,
    train_one_epoch,
)
from .folder import LOG, claim_folder, keep_only, keep_traceback, kept, link_job_logs, log_file, working_in
from .gate import Forms, check_forms
from .quantization import full_val_loader, quant_stage
from .settings import TrialSettings, settings_from_config
from .speed import deploy_speed

_log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 3  # exit status of an interrupted trial (rerun the same command to resume)
EXIT_DIVERGED = 4  # the training diverged: a result (status diverged), not a crash
EXIT_BUSY = 5  # another process trains this trial in this folder now
PER_IMAGE_FILE = "val_correct.bits"  # the train form's per-image correctness on the validation set
EXIT_CODES = {Status.COMPLETED: 0, Status.INTERRUPTED: EXIT_INTERRUPTED, Status.DIVERGED: EXIT_DIVERGED}


class TrialInterrupted(Exception):
    """SIGTERM or SIGUSR2 arrived; the trial stops at its last checkpoint."""


class Diverged(Exception):
    """The training diverged (a non-finite loss or weights); the trial ends with status `diverged`."""

    def __init__(self, epoch: int, reason: str) -> None:
        super().__init__(f"training diverged in epoch {epoch}: {reason}")
        self.epoch = epoch


class TrialRunner(submitit.helpers.Checkpointable):
    """A picklable trial for submitit; on preemption or timeout submitit requeues it and it resumes.

    `speed_dir` is where its speed figure is kept (a sweep shares one folder among its trials).
    """

    def __init__(self, config: dict[str, Any], trial_dir: str, speed_dir: str | None = None) -> None:
        self.config, self.trial_dir, self.speed_dir = config, str(trial_dir), speed_dir

    def __call__(self, progress: bool | None = None) -> TrialRecord:
        if not logging.getLogger().handlers:  # a batch job: plain log lines on stderr (the job's log file)
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings = settings_from_config(self.config)
        if self.speed_dir is not None:
            settings = settings.with_speed_dir(self.speed_dir)
        return run_trial(settings, Path(self.trial_dir), progress=progress)


def run_trial(
    s: TrialSettings,
    trial_dir: Path,
    *,
    progress: bool | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    wait: bool = True,
) -> TrialRecord:
    """Run (or resume, or report) one trial in `trial_dir`; returns its record.

    Only one process trains a trial: this one takes the folder's lock, waiting
    while another process trains it (`wait`; else TrialBusy), then reports that process's result if it finished.
    Raises `TrialInterrupted` after SIGTERM/SIGUSR2 (the checkpoint of the last finished epoch stays), and
    re-raises any failure after recording it (status `failed`, a one-line error; the traceback in trial.log).
    A diverged or gate-failed trial is a result (its status says so), not an exception. `on_epoch(epoch, row)`
    (epochs numbered from 1) is called on rank 0 after each epoch's checkpoint and metrics line (a search's pruner
    raises from it).
    """
    trial_dir = Path(trial_dir)
    claim_folder(trial_dir, s)  # refuses another trial's folder before waiting on anything
    with working_in(trial_dir, wait):
        link_job_logs(trial_dir)
        done = claim_folder(trial_dir, s)
        if done is not None:
            _log.info("trial %s already completed in %s: reporting its result", s.trial_id, trial_dir)
            return keep_only(trial_dir, s.cfg.keep_checkpoint, done)
        with log_file(trial_dir / LOG):
            return _Trial(s, trial_dir, want_progress() if progress is None else progress, on_epoch).run()


class _Trial:
    """The state of one running trial; `run()` drives it from set-up to the final record."""

    def __init__(self, s: TrialSettings, trial_dir: Path, progress: bool, on_epoch=None) -> None:
        self.s, self.cfg, self.dir, self.progress, self.on_epoch = s, s.cfg, trial_dir, progress, on_epoch
        self.timings = Timings()
        self.t0 = time.perf_counter()
        self.tracker: Tracker | None = None
        self.environment = Environment()
        self.dist: DistInfo | None = None
        self.final_eval: dict | None = None  # the last epoch's evaluation, reused by the end of the trial

    def run(self) -> TrialRecord:
        check_memory(self.s)  # bad input, refused before any file is written or memory taken
        status, error, result = Status.FAILED, None, None
        try:
            with _interruptible():
                self._setup()
                try:
                    self._train()
                    result = self._finish()
                except Diverged as exc:  # a result, not a crash: the last finite metrics are kept
                    result = self._diverged(exc)
            status = result.status
            return result
        except (TrialInterrupted, SystemExit, KeyboardInterrupt) as exc:
            status, error = Status.INTERRUPTED, f"{type(exc).__name__}: {exc}"
            raise
        except BaseException as exc:
            error = one_line(exc)
            keep_traceback(self.dir)
            raise
        finally:
            if result is None:  # the trial did not get to record its own end
                self._record_unfinished(status, error)
            if self.tracker is not None:
                self.tracker.finish(EXIT_CODES.get(status, 1))
            if self.dist is not None and self.dist.is_distributed:
                cleanup()

    # -- set-up -----------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        self.dist = init_distributed()
        self.main = self.dist.rank == 0
        self.device = self.dist.device if self.dist.is_distributed else resolve_device(cfg.device)
        threads = cfg.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", 0))  # a SLURM job: the cores it was given
        if threads:
            torch.set_num_threads(threads)
        configure_backends(cfg.train, self.device)
        self.environment = Environment(**training_environment(self.device, cfg.train))
        self.lock = DeviceLock(self.device)  # shared while training, so speed is never timed beside it
        if self.main:
            self.dir.mkdir(parents=True, exist_ok=True)
            files.write_config(self.dir, self.s.config, overwrite=True)
            self._write(Status.RUNNING)
        self._build()
        self._resume()
        self.tracker = Tracker(
            cfg.tracking,
            trial_id=self.s.trial_id,
            trial_dir=self.dir,
            config=self.s.config,
            tags=[self.s.preset, self.s.arch.variant.label],
            name=self.s.display_name,
            enabled=self.main,
        )
        self.timings.setup_s = time.perf_counter() - self.t0

    def _build(self) -> None:
        cfg, dist = self.cfg, self.dist
        self.train_loader, self.val_loader, self.info = build_loaders(
            cfg.data,
            device=self.device,
            seed=cfg.seed,
            distributed=dist.is_distributed,
            rank=dist.rank,
            world_size=dist.world_size,
            autoaugment=cfg.train.autoaugment,
            channels_last=cfg.train.channels_last and self.device.type == "cuda",  # as prepare_model: CUDA only
        )
        torch.manual_seed(cfg.seed)
        model = prepare_model(build_model(self.s.arch, seed=cfg.seed), cfg.train, self.device)  # paired across variants
        self.model = wrap_ddp(model, dist) if dist.is_distributed else model
        self.train_model = compile_model(self.model, cfg.train)  # what the steps call; self.model stays eager
        self.optimizer = build_optimizer(model, cfg.train, cfg.data.batch_size * dist.world_size)
        self.scheduler = build_scheduler(self.optimizer, cfg.train, len(self.train_loader))
        self.scaler = make_scaler(cfg.train, self.device)

    def _resume(self) -> None:
        path = self.dir / files.CHECKPOINT
        ckpt = checkpoints.load_usable_checkpoint(path, _log.warning, move_aside=self.main)
        self.epochs_done, self.resumes = 0, []
        if ckpt is not None:
            unwrap(self.model).load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            if self.scaler is not None and ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            self.epochs_done = ckpt["epochs_done"]
            self.resumes = [*ckpt.get("resumes", []), self.epochs_done]
            _log.info(
                "trial %s: resuming after epoch %d of %d", self.s.trial_id, self.epochs_done, self.cfg.train.epochs
            )
        elif self.main:
            self._save_checkpoint()  # so that an interruption during the first epoch also leaves a checkpoint
        if self.main:  # epochs after the checkpoint are redone: drop their lines
            files.truncate_jsonl(self.dir / files.METRICS, lambda r: r["epoch"] <= self.epochs_done)

    def _save_checkpoint(self) -> None:
        state = {
            "trial_id": self.s.trial_id,
            "epochs_done": self.epochs_done,
            "resumes": self.resumes,
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
        }
        checkpoints.save_checkpoint(self.dir / files.CHECKPOINT, state)

    # -- training ---------------------------------------------------------------------------------------------
    def _train(self) -> None:
        t, epochs = time.perf_counter(), self.cfg.train.epochs
        for epoch in range(self.epochs_done, epochs):
            with self.lock.shared():  # a speed measurement on this device waits for the epoch to end
                stats, val = self._epoch(epoch)
            self.epochs_done, self.final_eval = epoch + 1, val
            first_step = stats.pop("first_step_s", None)  # train.compile: this run's first step compiled the model
            if first_step is not None and self.timings.compile_s is None:
                self.timings.compile_s = first_step
            wait = {k: stats.pop(k) for k in ("data_wait_s", "data_wait_frac") if k in stats}
            row = {"trial_id": self.s.trial_id, "epoch": epoch + 1, **_prefixed(stats, "train_"), **_prefixed(val, "val_"),
                   **wait}  # fmt: skip
            if self.main:
                self._save_checkpoint()
                files.append_jsonl(self.dir / files.METRICS, row)
                self.tracker.log_epoch(row)
                if self.on_epoch is not None:
                    self.on_epoch(self.epochs_done, row)  # may raise (a pruned trial) after this epoch's checkpoint
            _log.info("epoch %d/%d: loss %.4f, val top1 %.2f%%", epoch + 1, epochs, stats["loss"], val["top1"])
        self.timings.train_s = time.perf_counter() - t

    def _epoch(self, epoch: int) -> tuple[dict, dict]:
        cfg = self.cfg
        try:
            stats = train_one_epoch(
                self.train_model, self.train_loader, self.optimizer, self.scheduler, cfg=cfg.train, device=self.device,
                epoch=epoch, seed=cfg.seed, scaler=self.scaler, progress=self.progress and self.main, log=_log.info,
            )  # fmt: skip
        except FloatingPointError as exc:  # a non-finite training loss
            raise Diverged(epoch + 1, str(exc)) from None
        last = epoch + 1 == cfg.train.epochs  # its predictions and margins serve the forms' agreement
        val = evaluate(self.model, self.val_loader, device=self.device, amp=cfg.train.amp, keep=last)
        if not math.isfinite(val["loss"]) or not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise Diverged(epoch + 1, f"non-finite weights after the epoch (validation loss {val['loss']})")
        return stats, val

    def _diverged(self, exc: Diverged) -> TrialRecord:
        """Record a diverged training as a result: its epoch, the last finite epoch's metrics, no model kept."""
        last = self._last_row()
        metrics = Metrics(top1=last.get("val_top1"), loss=last.get("val_loss"), epochs=self.epochs_done)
        _log.warning("trial %s: %s (a result: status diverged, last finite metrics kept)", self.s.trial_id, exc)
        if not self.main:
            return TrialRecord(trial_id=self.s.trial_id, status=Status.DIVERGED)
        return self._write(Status.DIVERGED, error=str(exc), diverged_epoch=exc.epoch, metrics=metrics,
                           data_wait=self._data_wait())  # fmt: skip

    # -- the end of a trial -----------------------------------------------------------------------------------
    def _finish(self) -> TrialRecord:
        """Evaluate, convert and gate (every rank: evaluation all-reduces over shards); rank 0 profiles, records."""
        t = time.perf_counter()
        model = unwrap(self.model).eval()
        with self.lock.shared():
            forms = check_forms(
                model, self.val_loader, self.device, self.s.arch, self.cfg.train.amp, self.cfg.gate, self.final_eval
            )
        self.timings.eval_s = time.perf_counter() - t
        per_image = self._per_image(forms.train_eval)  # every rank: the ranks' shards are gathered
        if not self.main:
            return TrialRecord(trial_id=self.s.trial_id, status=Status.COMPLETED)
        done = {"metrics": self._metrics(forms), "resumes": self.resumes, "conversion": forms.conversion,
                "per_image": per_image, "data_wait": self._data_wait()}  # fmt: skip
        if not forms.passed:  # the training is kept (checkpoint, metrics): a rerun gates again without training
            gate = forms.conversion.gate
            error = (
                f"conversion gate failed: deploy-form logits differ from the train form's by {gate.max_rel_error:.2e} "
                f"(relative, {gate.dtype}, TF32 off, {gate.images} images) > bound {gate.bound:.1e}"
            )
            return self._write(Status.FAILED, error=error, **done)
        measured = forms.deploy if forms.deploy is not None else model  # the deploy form, or the train form
        done.update(self._profile(measured, deploy_is_train_form=forms.deploy is None))
        if self.cfg.quant.ptq:
            done["quant"] = self._quantize(measured, done["metrics"])
        if self.cfg.keep_checkpoint != "none":
            checkpoints.save_checkpoint(self.dir / files.DEPLOY_WEIGHTS, measured.state_dict(), keep_previous=False)
        self.timings.total_s = time.perf_counter() - self.t0
        result = self._write(Status.COMPLETED, weights=kept(self.cfg.keep_checkpoint), **done)
        self.tracker.summarize(result)
        keep_only(self.dir, self.cfg.keep_checkpoint)
        return result

    def _per_image(self, train_eval: dict) -> PerImage | None:
        """Which validation images the train form classifies right (the top1 the sweeps compare), as a bit file;
        the image order's fingerprint names the data set, its split and the images, so only like pairs with like."""
        correct = gather_shards(train_eval["correct"], train_eval["total"])
        if not self.main:
            return None
        d = self.cfg.data
        order = order_digest([d.name, d.split_seed, d.val_fraction, d.synthetic_val_size, *range(len(correct))])
        write_correct(self.dir / PER_IMAGE_FILE, correct.numpy(), order)
        return PerImage(file=PER_IMAGE_FILE, images=len(correct), order=order, split="val")

    def _metrics(self, forms: Forms) -> Metrics:
        val, last = forms.train_eval, self._last_row()
        return Metrics(
            top1=val["top1"],
            deploy_top1=forms.deploy_eval["top1"] if forms.deploy_eval else None,
            loss=val["loss"],
            train_top1=last.get("train_top1"),
            train_loss=last.get("train_loss"),
            epochs=self.epochs_done,
            val_images=val["total"],
        )

    def _profile(self, measured, *, deploy_is_train_form: bool) -> dict[str, Any]:
        """Sizes of both forms, and the speed figure of the measured form (deploy, or train where none exists)."""
        t, side, channels = time.perf_counter(), self.info.image_size, self.info.in_channels
        speed = deploy_speed(self.s, self._speed_dir(), measured, self.device)
        self.timings.profile_s = time.perf_counter() - t
        at_224, at_side = arch_sizes(self.s.arch, 224), arch_sizes(self.s.arch, side)
        complexity = Complexity(
            input_size=[3, 224, 224],
            convention=MAC_CONVENTION,
            train=Sizes(**at_224["train"]),
            deploy=Sizes(**at_224["deploy"]),
            trial_size=TrialSize([channels, side, side], Sizes(**at_side["train"]), Sizes(**at_side["deploy"])),
            deploy_is_train_form=deploy_is_train_form,
        )
        return {"complexity": complexity, "speed": speed}

    def _quantize(self, measured, metrics: Metrics) -> Quant:
        t = time.perf_counter()
        float_top1 = metrics.deploy_top1 if metrics.deploy_top1 is not None else metrics.top1
        cfg = self.cfg
        # rank 0 quantizes alone: over the whole validation set, not its shard
        val = full_val_loader(cfg.data, cfg.seed) if self.dist.is_distributed else self.val_loader
        block = quant_stage(measured, cfg.quant, cfg.data, val, self.dir, self._speed_dir(), float_top1)
        _log.info("trial %s: INT8 top1 %.2f%% (drop from float ONNX %.2f points, %d images)", self.s.trial_id,
                  block.int8_top1, block.drop, block.val_images)  # fmt: skip
        self.timings.quant_s = time.perf_counter() - t
        return block

    def _speed_dir(self) -> Path:
        return Path(self.cfg.speed_dir) if self.cfg.speed_dir else self.dir / "speed"

    def _data_wait(self) -> DataWaitBlock | None:
        """The data-wait summary over every epoch in metrics.jsonl (resumed runs' epochs included); None without."""
        rows = [r for r in files.read_jsonl(self.dir / files.METRICS) if "data_wait_s" in r]
        summary = wait_summary((r["data_wait_s"], r["train_seconds"]) for r in rows)
        if not summary:
            return None
        return DataWaitBlock(**summary, epochs=len(rows), warn_frac=WAIT_WARN_FRACTION, convention=DATA_WAIT_CONVENTION)

    def _last_row(self) -> dict:
        rows = files.read_jsonl(self.dir / files.METRICS)
        return rows[-1] if rows else {}

    # -- records ----------------------------------------------------------------------------------------------
    def _write(self, status: Status, **blocks: Any) -> TrialRecord:
        """Write the trial's record: the header, the given blocks (TrialRecord fields), provenance and timings."""
        s = self.s
        record = TrialRecord.header(trial_id=s.trial_id, status=status, group=self.cfg.tracking.group,
                                    arch=ArchBlock.of(s.preset, s.arch), seed=self.cfg.seed, config=s.config)  # fmt: skip
        for name, value in blocks.items():
            setattr(record, name, value)  # slots: a name that is not a record field raises here
        record.timings = dataclasses.replace(self.timings)
        record.git_commit = devices.git_commit()
        record.versions = devices.library_versions()
        record.environment = self.environment
        record.wandb_run = self.tracker.run_dir if self.tracker is not None else None
        return write_record(self.dir / files.RESULT, record)

    def _record_unfinished(self, status: Status, error: str | None) -> None:
        if self.dist is not None and not self.main:
            return
        with contextlib.suppress(Exception):  # recording must never hide the original error
            self.timings.total_s = time.perf_counter() - self.t0
            result = self._write(status, error=error, epochs_done=getattr(self, "epochs_done", 0))
            if self.tracker is not None:
                self.tracker.summarize(result)


def check_memory(settings: TrialSettings) -> None:
    """Refuse (BadInputError) a trial whose training cannot fit: a lower bound of what it needs (autograd's saved
    tensors counted on the meta device, weights, gradients, momentum, the in-memory data set) against the memory
    its device has free (`profile.memory`)."""
    cfg = settings.cfg
    check_training_memory(settings.arch, cfg.data.batch_size, cfg.data.image_size, resolve_device(cfg.device),
                          amp=cfg.train.amp != "none", data_bytes=in_memory_bytes(cfg.data))  # fmt: skip


def one_line(exc: BaseException) -> str:
    """An error in one line that names the resource: a full disk with its path, memory with the device."""
    line = resource_error(exc)
    if line is not None:
        return line
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return f"out of memory ({type(exc).__name__}): {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:500] if str(exc) else ''}"


def _prefixed(d: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in d.items() if isinstance(v, int | float)}


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Turn SIGTERM (and, in a plain process, SIGUSR2) into `TrialInterrupted`: the trial stops at its last
    checkpoint and records `interrupted`.

    One policy for a plain process, a grid sweep's job and a search worker's job: SIGTERM (a person's `kill`,
    `scancel`, a cluster's preemption without a warning signal) stops the trial now, and its sweep or search runs it
    again from the checkpoint. Under submitit, SIGUSR2 (SLURM's preemption/time-limit warning) stays submitit's: it
    checkpoints the job and requeues it; submitit's own SIGTERM handler, which only logs "Bypassing signal SIGTERM"
    and lets the trial train on, is replaced while a trial runs. Outside the main thread nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise TrialInterrupted(f"received {signal.Signals(signum).name}")

    signals = (signal.SIGTERM,) if "SUBMITIT_FOLDER" in os.environ else (signal.SIGTERM, signal.SIGUSR2)
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
