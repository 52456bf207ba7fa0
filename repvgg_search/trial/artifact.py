"""A finished trial taken out of its folder: the model (deploy or train form) with its architecture and record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import checkpoints, files
from ..config import to_arch
from ..errors import BadInputError
from ..models import ArchConfig, build_model, load_state_dict, reparameterize_model
from ..schema import Status, TrialRecord, read_record
from .settings import typed_config

FORMS = ("deploy", "train")


@dataclass
class TrialModel:
    """What `from_trial` returns: `model` (eval mode, on `device`), its `arch`, the trial's `record` (its
    `result.json`), which `form` it is, and the trial folder `path`."""

    model: nn.Module
    arch: ArchConfig
    record: TrialRecord
    form: str
    path: Path

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(channels, height, width) the trial trained and evaluated at."""
        side = int(self.record.config["data"]["image_size"])
        return (3, side, side)


def trial_arch(record: TrialRecord) -> ArchConfig:
    """The architecture a trial record describes, rebuilt from its config alone (no data set needed)."""
    typed = typed_config({k: record.config[k] for k in ("model", "variant")})  # all the network is
    arch = to_arch(typed.model, typed.variant, int(record.arch.num_classes))
    if list(arch.widths) != list(record.arch.widths) or list(arch.depths) != list(record.arch.depths):
        raise BadInputError(
            f"the trial's config describes widths {arch.widths}, depths {arch.depths}, its record "
            f"{record.arch.widths}, {record.arch.depths}: the record was written by another version"
        )
    return arch


def _checkpoint_model(path: Path) -> dict[str, torch.Tensor]:
    try:
        return checkpoints.load_checkpoint(path)["model"]
    except Exception as exc:  # a torn or foreign file: say which, never unpickle more than weights
        raise BadInputError(f"{path} cannot be used as a training checkpoint: {type(exc).__name__}") from None


# What a completed record must hold for its model to be rebuilt: its blocks, and the config sections of the network.
NEEDED_BLOCKS = ("arch", "config", "metrics")
NEEDED_CONFIG = ("model", "variant", "data")


def _check_complete(record: TrialRecord, where: Path) -> None:
    """A completed record that lacks a block (an edited or foreign file) is bad input naming the file and field;
    read_record has already checked the types and the schema version of what is there."""
    for name in NEEDED_BLOCKS:
        if getattr(record, name) is None:
            raise BadInputError(f"{where}: field {name!r} is missing; a completed trial record holds it")
    for name in NEEDED_CONFIG:
        if not isinstance(record.config.get(name), dict):
            raise BadInputError(f"{where}: field 'config.{name}' is missing; a completed trial record holds it")


def from_trial(path: str | Path, form: str = "deploy", device: str | torch.device = "cpu") -> TrialModel:
    """Load a finished trial's model with its architecture and record, ready to use (eval mode).

    `form="deploy"`: the plain deploy form from `deploy.pt` (for a variant with no deploy form, its train form:
    the form the trial measured). `form="train"`: the multi-branch train form from `checkpoints/last.pt`, kept
    only with `keep_checkpoint=all`. Weights load with `weights_only=True` and must fit exactly.
    """
    path = Path(path)
    if form not in FORMS:
        raise BadInputError(f"form={form!r} is unknown; allowed: {', '.join(FORMS)}")
    record = read_record(path / files.RESULT)
    if record is None:
        raise BadInputError(f"{path} holds no trial record ({files.RESULT}); give a trial folder")
    if record.status is not Status.COMPLETED:
        raise BadInputError(f"trial {record.trial_id} in {path} is {record.status.value!r}, not completed")
    _check_complete(record, path / files.RESULT)
    arch = trial_arch(record)
    model = build_model(arch)
    if form == "deploy":
        weights = path / files.DEPLOY_WEIGHTS
        model = reparameterize_model(model) if arch.reparameterizable else model
        state = weights
    else:
        weights = path / files.CHECKPOINT
        state = _checkpoint_model(weights) if weights.exists() else None
    if not weights.exists():
        keep = (record.config or {}).get("keep_checkpoint", "?")
        need = "deploy or all" if form == "deploy" else "all"
        raise BadInputError(
            f"{weights} is not there: the trial kept {keep!r} weights (keep_checkpoint={keep}); the {form} form "
            f"needs keep_checkpoint={need} (rerun the trial with it to train it again)"
        )
    load_state_dict(model, state)
    return TrialModel(model.to(device).eval(), arch, record, form, path)
