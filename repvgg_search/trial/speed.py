"""A trial's deploy-form speed figure from its settings alone: known before any training.

The speed of a candidate depends only on its deploy architecture (weights do not change the time), so a search
obtains it before the candidate's first epoch: measured (speed.predictor=measure: the deploy form of a freshly
initialised network, timed with the device to itself) or predicted from the per-layer latency table
(speed.predictor=lut). Either way the figure lands in the speed folder under the key the trial's own profiling
uses, so the trial reuses it after training (its record says `source: cached`, or `predicted`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..devices import resolve_device
from ..models import build_model, reparameterize_model
from ..profile import resolve_protocol
from ..profile.figures import speed_figure
from ..profile.lut import predicted_figure
from ..schema import SpeedFigure
from .settings import TrialSettings


def deploy_speed(
    settings: TrialSettings,
    speed_dir: Path | str,
    measured: nn.Module | None = None,
    device: torch.device | None = None,
) -> SpeedFigure:
    """The trial's speed figure under its `speed` protocol and predictor, kept in `speed_dir`.

    measured: the form to time (the trained deploy form, after training); None = the deploy form of a network built
    from the architecture (the train form where the variant has no deploy form). `form` says which was timed.
    """
    cfg = settings.cfg
    dev = device or resolve_device(cfg.device)
    protocol = resolve_protocol(dataclasses.asdict(cfg.speed), dev)
    side, arch = cfg.data.image_size, settings.arch
    if cfg.speed.predictor == "lut":
        figure = predicted_figure(arch, protocol, dev, speed_dir, side)
    else:
        if measured is None:
            model = build_model(arch, seed=cfg.seed).eval()
            measured = reparameterize_model(model) if arch.reparameterizable else model
        figure = speed_figure(measured, protocol, dev, Path(speed_dir), side=side, in_channels=3)
    figure.form = "deploy" if arch.reparameterizable else "train"
    return figure
