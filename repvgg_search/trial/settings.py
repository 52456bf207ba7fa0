"""A trial's settings: the config typed and validated completely before anything runs, and its id."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from ..config import TrialConfig, to_arch
from ..data import READ_FIELDS, count_train_images, expected_num_classes, known_train_size
from ..deploy.quant import reference_device
from ..deploy.quant_protocols import QuantError, protocol_of_config
from ..devices import resolve_device
from ..errors import BadInputError, check_int
from ..models import ArchConfig
from ..profile.lut import check_predictor
from ..profile.protocols import PROTOCOLS, resolve_protocol
from ..profile.speed import check_runtime
from ..tracking import validate_tracking
from ..training import (
    validate_train,
)
from .gate import validate_gate

_log = logging.getLogger(__name__)

# Fields that change where or how fast data is read, not what a trial computes: left out of the trial id.
# How images are read (decoder, storage format, JPEG draft mode, shuffle buffer: data.READ_FIELDS) is one of them.
# train.compile changes how the steps run (inductor kernels), not the recipe: a trial resumes across it.
NOT_IN_ID = {
    "data": {"root", "download", "num_workers", "pin_memory", "persistent_workers", "eval_batch_size"} | READ_FIELDS,
    "train": {"log_interval", "compile"},
}


KEEP = ("all", "deploy", "none")  # keep_checkpoint: what a completed trial keeps on disk


@dataclass(frozen=True)
class TrialSettings:
    """A validated trial: its id, its effective architecture, the typed config (`cfg`, plain dataclasses: no
    DictConfig) and the resolved config as records hold it (`config`: no output paths)."""

    trial_id: str
    arch: ArchConfig
    cfg: TrialConfig
    config: dict[str, Any]

    @property
    def preset(self) -> str:
        return self.cfg.model.name

    @property
    def display_name(self) -> str:
        """`<preset>-<variant>-s<seed>`: the default folder prefix and wandb run name."""
        return f"{self.preset}-{self.arch.variant.label}-s{self.cfg.seed}"

    def with_speed_dir(self, speed_dir: str | None) -> TrialSettings:
        """The same trial with its speed figures kept in `speed_dir` (a sweep's shared folder)."""
        return dataclasses.replace(self, cfg=dataclasses.replace(self.cfg, speed_dir=speed_dir))


def typed_config(cfg: DictConfig | dict) -> TrialConfig:
    """The config as a typed `TrialConfig`: OmegaConf checks every key and type against the schema, and a key or
    value outside it is a BadInputError naming the key and (for a key) the ones allowed there."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    container.pop("hydra", None)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrialConfig), container))
    except ConfigKeyError as exc:
        where = str(exc.full_key).rpartition(".")[0]
        allowed = ", ".join(f.name for f in dataclasses.fields(exc.object_type)) if exc.object_type else "?"
        raise BadInputError(
            f"unknown config key {exc.full_key!r}{f' under {where!r}' if where else ''}; allowed there: {allowed}"
        ) from None
    except (ValidationError, OmegaConfBaseException) as exc:
        raise BadInputError(f"{getattr(exc, 'full_key', '?')}: {str(exc).splitlines()[0]}") from None


def settings_from_typed(typed: TrialConfig) -> TrialSettings:
    """Validate a typed trial config completely, before anything runs (plain Python: cheap per trial)."""
    validate_train(typed.train, typed.data, resolve_device(typed.device))
    validate_tracking(typed.tracking)
    _validate_run(typed)
    arch = to_arch(typed.model, typed.variant, expected_num_classes(typed.data))
    check_predictor(typed.speed.predictor, arch)  # LutError names speed.predictor and what it cannot predict
    config = dataclasses.asdict(typed)
    for key in ("output_dir", "speed_dir"):  # where things go, not what the trial is
        config.pop(key, None)
    return TrialSettings(trial_id=trial_id(config, arch), arch=arch, cfg=typed, config=config)


def settings_from_config(cfg: DictConfig | dict) -> TrialSettings:
    """Validate a trial config (Hydra node or plain dict) completely, before anything runs."""
    return settings_from_typed(typed_config(cfg))


def validate(cfg: DictConfig | dict) -> TrialSettings:
    """Entry-point validation hook (tests compose every conf/ file through it)."""
    return settings_from_config(cfg)


SCAN_ABOVE = 10_000  # calibration images above this are checked against a scan of an ImageNet folder's train split


def _validate_run(cfg: TrialConfig) -> None:
    if not 0 <= cfg.seed < 2**63:
        raise BadInputError(f"seed={cfg.seed} must be an integer in [0, 2**63): it seeds torch and the data order")
    if cfg.threads is not None and cfg.threads < 1:
        raise BadInputError(f"threads={cfg.threads} must be >= 1, or null for torch's default")
    device = resolve_device(cfg.device)
    # Refused here, not after training: bad speed fields, and a runtime the device or dtype cannot run.
    check_runtime(resolve_protocol(dataclasses.asdict(cfg.speed), device), device)
    validate_gate(cfg.gate)
    protocol = protocol_of_config(cfg.quant)  # refuses an unknown protocol or field value by key
    reference_device(cfg.quant.reference_device)
    check_int(cfg.quant.layer_images, "quant.layer_images", 0, "0: no per-layer analysis", QuantError)
    train_size = known_train_size(cfg.data)
    if cfg.quant.ptq and train_size is None and protocol.calib_images > SCAN_ABOVE:  # only a suspicious count
        train_size = count_train_images(cfg.data)  # pays for a scan of ImageNet's train folder
    if cfg.quant.ptq and train_size is not None and protocol.calib_images > train_size:
        raise BadInputError(
            f"quant.calib_images={protocol.calib_images} must be between 1 and the {train_size} training images of "
            f"data.name={cfg.data.name} (the calibration images are drawn from the training split)"
        )
    if cfg.quant.speed != "none" and cfg.quant.speed not in PROTOCOLS:
        raise BadInputError(f"quant.speed={cfg.quant.speed!r} is unknown; allowed: none, {', '.join(PROTOCOLS)}")
    if cfg.keep_checkpoint not in KEEP:
        raise BadInputError(f"keep_checkpoint={cfg.keep_checkpoint!r} is unknown; allowed: {', '.join(KEEP)}")


def trial_id(config: dict[str, Any], arch: ArchConfig) -> str:
    """Hash of what determines the trial's results: the effective architecture and the resolved settings.

    The architecture enters with the preset's values filled in, so `model=b1g4` and `model=b1 model.groups=4`
    are the same trial; tracking, device, thread and speed settings are left out (a speed figure belongs to the
    deploy architecture, the device and the protocol, not to a trial).
    """
    content = {
        "arch": arch.identity(),
        "data": {k: v for k, v in config["data"].items() if k not in NOT_IN_ID["data"]},
        "train": {k: v for k, v in config["train"].items() if k not in NOT_IN_ID["train"]},
        "seed": config["seed"],
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=list).encode()).hexdigest()
    return digest[:12]
