"""Every file under repvgg_search/conf/ composes onto its schema and validates; overrides work."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from support import run_cli

from repvgg_search.config import CONF_DIR, ENTRY_POINTS

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")  # hydra: shared settings


def _compose(primary: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=primary, overrides=overrides)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _cases():
    for primary, module in ENTRY_POINTS.items():
        entry = importlib.import_module(module)
        defaults = OmegaConf.load(CONF_DIR / f"{primary}.yaml").get("defaults", [])
        groups = {next(iter(d)) for d in defaults if isinstance(d, dict) or OmegaConf.is_dict(d)}
        for group in GROUPS:
            if group in groups:
                for option in _options(group):
                    yield pytest.param(primary, entry, [f"{group}={option}"], id=f"{primary}-{group}={option}")


def _data_root(option: str, tmp: Path) -> list[str]:
    """A minimal on-disk layout for the data sets that validate their root (nothing is read from it)."""
    from repvgg_search.data.config import CIFAR_DIRS as _CIFAR_DIRS

    if option in _CIFAR_DIRS:
        (tmp / _CIFAR_DIRS[option]).mkdir(parents=True)
        (tmp / _CIFAR_DIRS[option] / "data_batch_1").write_bytes(b"")
    elif option == "imagenet":
        for split in ("train", "val"):
            (tmp / split / "n01").mkdir(parents=True)
            (tmp / split / "n01" / "x.JPEG").write_bytes(b"")
    else:
        return []
    return [f"data.root={tmp}"]


@pytest.mark.parametrize(("primary", "entry", "overrides"), list(_cases()))
def test_every_config_file_composes_and_validates(primary, entry, overrides, tmp_path):
    group, option = overrides[0].split("=")
    extra = _data_root(option, tmp_path) if group == "data" else []
    cfg = _compose(primary, overrides + extra)
    entry.validate(cfg)


def test_every_conf_group_is_used_by_an_entry_point():
    used = set()
    for primary in ENTRY_POINTS:
        for d in OmegaConf.load(CONF_DIR / f"{primary}.yaml").get("defaults", []):
            if OmegaConf.is_dict(d):
                used |= {k.removeprefix("override ") for k in d}
    assert set(GROUPS) - {"sweep"} <= used


def test_model_overrides_from_the_command_line():
    from repvgg_search.profile.cli import validate

    cfg = _compose("profile", ["model=b1g4", "model.a=1.25", "variant=post_bn", "model.depths=[1,2,4,8,1]"])
    arch = validate(cfg)["b1g4"]
    assert (arch.a, arch.b, arch.groups, arch.variant.name, arch.depths) == (1.25, 4.0, 4, "post_bn", (1, 2, 4, 8, 1))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["model.b=0"], "width multiplier b must be a finite number > 0"),
        (["model.depths=[1,2,3]"], "depths must be 5 positive integers"),
        (["model.grouped_layers=[0]", "model.groups=2"], "stem"),
        (["num_classes=0"], "num_classes must be an integer >= 1"),
        (["variant.name=bogus"], "unknown variant 'bogus'"),
        (["model.name=b7"], "unknown preset 'b7'"),
    ],
)
def test_bad_values_in_configs_are_refused(overrides, match):
    from repvgg_search.profile.cli import validate

    with pytest.raises(ValueError, match=match):
        validate(_compose("profile", overrides))


def test_the_quant_group_picks_a_protocol_and_a_changed_field_renames_it():
    """`quant=<name>` (a conf/quant file), `quant.protocol=<name>` alone, a field changed on top, a bad value."""
    from repvgg_search.deploy.quant_protocols import PROTOCOLS, QuantError, protocol_of_config
    from repvgg_search.trial import validate

    def protocol(*overrides: str):
        return protocol_of_config(validate(_compose("train", list(overrides))).cfg.quant)

    assert protocol() == PROTOCOLS["ort_qdq"] and protocol("quant=symmetric") == PROTOCOLS["symmetric"]
    assert protocol("quant.protocol=symmetric") == PROTOCOLS["symmetric"]  # the named protocol's fields, not ort_qdq's
    assert protocol("quant=ort_legacy") == PROTOCOLS["ort_legacy"] and PROTOCOLS["ort_legacy"].keep_float == ()
    changed = protocol("quant=symmetric", "quant.calibrate=percentile", "quant.percentile=99.99")
    assert changed.name == "symmetric+calibrate=percentile,percentile=99.99" and changed.activation_type == "int8"
    with pytest.raises(
        QuantError, match="quant.protocol='tensorrt' is unknown; allowed: ort_legacy, ort_qdq, symmetric"
    ):
        protocol("quant.protocol=tensorrt")
    with pytest.raises(QuantError, match="quant.reduce_range='sometimes' is unknown; allowed: auto, true, false"):
        protocol("quant.reduce_range=sometimes")
    with pytest.raises(QuantError, match="quant.layer_images=-1 must be an integer >= 0"):
        protocol("quant.layer_images=-1")


def test_the_quant_ablation_times_at_the_trial_size_unless_told_otherwise():
    """+sweep=quant_ablation picks the speed protocols of its own file (trial_size for the deploy form and for the
    ONNX models), and the command line still overrides both, the group and the key."""
    from repvgg_search.sweep.cli import register

    register()
    bare = _compose("sweep", ["+sweep=quant_ablation"])
    assert (bare.speed.name, bare.quant.speed, bare.quant.ptq) == ("trial_size", "trial_size", True)
    designs = ["full", "qarepvgg", "identity_no_bn", "post_bn", "no_identity", "no_1x1", "no_branches"]
    assert list(bare.sweep.axes.variant) == designs and bare.sweep.seeds == 3  # 21 trials: ~10 min on 2 cores
    told = _compose("sweep", ["+sweep=quant_ablation", "speed=cpu", "quant.speed=cpu"])
    assert (told.speed.name, told.speed.batch_size, told.quant.speed) == ("cpu", 16, "cpu")
    assert _compose("sweep", ["+sweep=ablation"]).speed.name == "auto"  # the other sweeps keep the default


def test_a_speed_field_set_on_the_command_line_always_changes_the_protocol():
    """Under `speed=auto` on the CPU a field set to `paper`'s value is still a change of `cpu`: `speed.iters=10`
    gave `cpu` (3 batches a round) when the config node held paper's defaults and unchanged values were dropped."""
    import dataclasses

    import torch

    from repvgg_search.profile import PROTOCOLS, SpeedProtocol, resolve_protocol
    from repvgg_search.profile.protocols import NULLABLE
    from repvgg_search.trial.settings import settings_from_config

    def resolved(*overrides: str, device: str = "cpu"):
        cfg = settings_from_config(_compose("train", list(overrides))).cfg
        return resolve_protocol(dataclasses.asdict(cfg.speed), torch.device(device))

    assert resolved() == PROTOCOLS["cpu"] and resolved(device="cuda") == PROTOCOLS["paper"]
    told = resolved("speed.iters=10", "speed.batch_size=128", "speed.warmup=5")
    assert (told.iters, told.batch_size, told.warmup) == (10, 128, 5)
    assert told.name == "cpu+batch_size=128,warmup=5,iters=10"  # in the fields' order
    assert resolved("speed=cpu", "speed.iters=10").name == "cpu+iters=10"
    assert resolved("speed=paper") == PROTOCOLS["paper"] and resolved("speed.threads=1").threads == 1
    for name in ("cpu", "paper"):  # what auto resolves to shares the nullable fields' defaults (dropped unchanged)
        assert {k: getattr(PROTOCOLS[name], k) for k in NULLABLE} == {k: getattr(SpeedProtocol(), k) for k in NULLABLE}


def test_unknown_group_option_is_a_hydra_error():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="variant"):
        _compose("profile", ["variant=bogus"])


def test_type_errors_name_the_key():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="model.a=wide"):
        _compose("profile", ["model.a=wide"])


@pytest.mark.parametrize(
    ("module", "accepted", "refused"),
    [
        ("repvgg_search.train", ["model", "variant", "data", "train", "speed", "quant"], ["launcher", "sweep"]),
        ("repvgg_search.sweep", ["model", "variant", "data", "train", "speed", "quant", "launcher", "+sweep"], []),
        ("repvgg_search.profile", ["model", "variant", "speed"], ["data", "train", "launcher", "sweep", "quant"]),
    ],
)
def test_help_lists_only_the_groups_the_entry_point_accepts(module, accepted, refused):
    out = run_cli(module, "--help", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    groups = out.stdout.split("== Configuration groups")[1].split("== Config ")[0]
    listed = [line.split(":")[0] for line in groups.splitlines()[1:] if ":" in line]
    assert sorted(listed) == sorted(accepted) and not set(refused) & set(listed)
    assert "variant: " in groups and "qarepvgg" in groups  # each group with its options
    assert "\nmodel:\n  name: a0" in out.stdout  # the config the command would run
