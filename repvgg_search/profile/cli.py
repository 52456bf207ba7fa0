"""`python -m repvgg_search.profile`: a table of train form vs deploy form (params, MACs, speed, equivalence)."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from ..config import ProfileConfig, plain_dict, register_configs, to_arch
from ..devices import resolve_device
from ..entry import hydra_entry
from ..models import ArchConfig, build_model, equivalence_error, list_models, load_state_dict, reparameterize_model
from ..schema import MAC_CONVENTION, SpeedFigure
from .complexity import complexity
from .figures import speed_figure
from .protocols import SpeedError, SpeedProtocol, resolve_protocol

register_configs()


def profile_arch(
    arch: ArchConfig, protocol: SpeedProtocol, device: torch.device, checkpoint: str | None = None, seed: int = 0
) -> dict[str, Any]:
    """Complexity at 224x224, speed under `protocol`, and equivalence error of one architecture's two forms."""
    torch.manual_seed(seed)
    train_model = build_model(arch).eval()
    if checkpoint:
        load_state_dict(train_model, checkpoint)
    forms = {"train": train_model}
    out: dict[str, Any] = {"arch": arch}
    side = protocol.input_size or 224
    if arch.reparameterizable:
        forms["deploy"] = reparameterize_model(train_model)
        x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(seed))
        out["conversion"] = equivalence_error(train_model, forms["deploy"], x)
    for name, model in forms.items():
        speed = speed_figure(model, protocol, device, None, side=side)  # with the device to itself
        out[name] = {"complexity": complexity(model, (3, 224, 224)), "speed": speed}
    return out


def _table(results: list[dict[str, Any]], speed: SpeedFigure) -> Table:
    layout = "channels_last" if speed.channels_last else "NCHW"
    tf32 = "" if speed.tf32 is None else f", TF32 {'on' if speed.tf32 else 'off'}"
    title = (
        f"train vs deploy form; MACs: {MAC_CONVENTION}, at 3x224x224; speed: protocol {speed.protocol}, batch "
        f"{speed.batch_size}, {'x'.join(map(str, speed.input_size))}, {speed.dtype}{tf32}, {layout}, "
        f"median of {len(speed.rounds_images_per_s)} rounds, {speed.device_name} ({speed.device}, "
        f"{speed.threads} threads)"
    )
    table = Table(title=title, title_justify="left")
    cols = (
        "preset",
        "variant",
        "form",
        "params (M)",
        "GMACs",
        "images/s",
        "spread",
        "latency ms (median)",
        "rel. error",
    )
    for col in cols:
        table.add_column(col, justify="right" if col not in ("preset", "variant", "form") else "left")
    for r in results:
        arch = r["arch"]
        for form in ("train", "deploy"):
            if form not in r:
                table.add_row("", "", "deploy", "-", "-", "-", "-", "-", "not re-parameterizable")
                continue
            c, s = r[form]["complexity"], r[form]["speed"]
            err = f"{r['conversion']['max_rel_error']:.1e}" if form == "deploy" else ""
            first = form == "train"
            table.add_row(
                r.get("preset", "custom") if first else "",
                arch.variant.label if first else "",
                form,
                f"{c['params'] / 1e6:.2f}",
                f"{c['macs'] / 1e9:.2f}",
                f"{s.images_per_s:.1f}",
                f"{s.spread:.3f}" + ("" if s.reliable else " (unreliable)"),
                f"{s.latency_ms:.1f}",
                err,
            )
    return table


def validate(cfg: ProfileConfig | DictConfig) -> dict[str, ArchConfig]:
    """Check the whole profile config; returns the architectures to profile, by preset name."""
    predictor = plain_dict(cfg.speed).get("predictor", "measure")
    if predictor != "measure":
        raise SpeedError(
            f"speed.predictor={predictor!r}: this command measures train and deploy forms side by side (allowed: "
            "measure); the latency table serves trials and searches (python -m repvgg_search.train / sweep)"
        )
    resolve_protocol(plain_dict(cfg.speed), resolve_device(cfg.device))
    names = list_models() if cfg.all_presets else [cfg.model.name]
    return {name: to_arch({**plain_dict(cfg.model), "name": name}, cfg.variant, cfg.num_classes) for name in names}


def run(cfg: ProfileConfig | DictConfig) -> list[dict[str, Any]]:
    """Profile the configured architecture (or every preset); returns one result per architecture."""
    archs = validate(cfg)  # everything is checked before the first (slow) measurement
    device = resolve_device(cfg.device)
    protocol = resolve_protocol(plain_dict(cfg.speed), device)
    results = []
    for name, arch in archs.items():
        results.append({"preset": name, **profile_arch(arch, protocol, device, cfg.checkpoint, cfg.seed)})
    console = Console()
    if not console.is_terminal:
        console.width = 160  # batch logs: do not wrap the table at 80 columns
    console.print(_table(results, results[0]["train"]["speed"]))
    return results


@hydra_entry("profile")
def main(cfg: DictConfig) -> None:
    """Exit status 2 on bad input (Hydra's refusals included), before any measurement."""
    run(cfg)


if __name__ == "__main__":
    main()
