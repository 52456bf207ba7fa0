"""The entry point of every Hydra app: bad input, whether Hydra refuses the command line (an unknown key, option or
type) or the app refuses a value, exits with status 2 and one line; anything else keeps its traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import yaml
from omegaconf import DictConfig, OmegaConf

from .config import CONF_DIR
from .errors import EXIT_BAD_INPUT, exit_on_bad_input


def _check_run_dir(args: list[str]) -> None:
    """`hydra.run.dir=PATH` naming a file: refused before Hydra tries to make it a folder (and prints a traceback)."""
    for arg in args:
        key, _, value = arg.lstrip("+").partition("=")
        if key == "hydra.run.dir" and value and Path(value).exists() and not Path(value).is_dir():
            print(f"error: hydra.run.dir={value} is a file, not a folder; choose another (or output_dir=PATH)",
                  file=sys.stderr)  # fmt: skip
            sys.exit(EXIT_BAD_INPUT)


def config_groups(config_name: str, extra: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """The config groups an entry point accepts (those of its primary config's defaults, plus `extra` ones that
    are added with `+group=option`) and each group's options."""
    defaults = yaml.safe_load((CONF_DIR / f"{config_name}.yaml").read_text()).get("defaults", [])
    names = [next(iter(d)) for d in defaults if isinstance(d, dict) and next(iter(d)) != "hydra"]
    return {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml")) for g in [*names, *extra]}


def print_help(config_name: str, doc: str, extra: tuple[str, ...], overrides: list[str]) -> None:
    """`--help`: what the command does, the groups it accepts (and only those), and the config it would run."""
    from hydra import compose, initialize_config_dir

    print(doc.strip() + "\n\n== Configuration groups (group=option) ==")
    for group, options in config_groups(config_name, extra).items():
        plus = "+" if group in extra else ""
        print(f"{plus}{group}: {', '.join(options)}")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=overrides)
    except Exception as exc:  # Hydra's refusal of an override: bad input
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    print("\n== Config (override anything: key=value; Hydra's own flags: --hydra-help) ==")
    print(OmegaConf.to_yaml(cfg).rstrip())


def hydra_entry(
    config_name: str, extra_groups: tuple[str, ...] = ()
) -> Callable[[Callable[[DictConfig], Any]], Callable[[], None]]:
    """Turn `task(cfg)` into a console entry point over the primary config `config_name` (`extra_groups`: groups
    it accepts with `+group=option`, e.g. `+sweep=ablation`)."""

    def wrap(task: Callable[[DictConfig], Any]) -> Callable[[], None]:
        started = {"task": False}

        @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
        def app(cfg: DictConfig) -> None:
            started["task"] = True
            exit_on_bad_input(task)(cfg)

        @functools.wraps(task)
        def main() -> None:
            args = sys.argv[1:]
            if "--help" in args or "-h" in args:
                doc = sys.modules[task.__module__].__doc__ or ""
                overrides = [a for a in args if a not in ("--help", "-h")]
                print_help(config_name, doc, extra_groups, overrides)
                return
            _check_run_dir(args)
            try:
                app()
            except SystemExit as exit_:
                # Hydra reports a command line it cannot compose (already printed) with status 1, before the task.
                if exit_.code == 1 and not started["task"]:
                    for hint in allowed_hints(args):  # Hydra's type error names the key; this adds what it takes
                        print(hint, file=sys.stderr)
                    sys.exit(EXIT_BAD_INPUT)
                raise

        return main

    return wrap


BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")  # what OmegaConf converts to a bool


def choices() -> dict[str, tuple[str, ...]]:
    """The config keys whose values are a fixed set, from the modules that check them (one list each)."""
    from .data.config import DATASETS
    from .deploy.quant import CALIBRATIONS
    from .profile.protocols import DTYPES, PROTOCOLS, RUNTIMES
    from .sweep.spec import ACTIONS, KINDS
    from .tracking import MODES
    from .training import AMP_MODES
    from .trial.gate import GATE_DTYPES
    from .trial.settings import KEEP

    return {
        "keep_checkpoint": KEEP, "data.name": DATASETS, "quant.calibrate": CALIBRATIONS, "speed.dtype": tuple(DTYPES),
        "speed.runtime": RUNTIMES, "tracking.mode": MODES, "train.amp": AMP_MODES, "gate.dtype": tuple(GATE_DTYPES),
        "quant.speed": ("none", *PROTOCOLS), "sweep.action": ACTIONS, "sweep.kind": KINDS,
    }  # fmt: skip


def allowed_hints(args: list[str]) -> list[str]:
    """For each `key=value` override whose value the schema cannot take, one line naming the values it takes:
    the key's fixed choices, or true/false for a boolean field of the trial or sweep schema."""
    from .config import TrialConfig
    from .sweep.spec import SweepSpec

    known, hints = choices(), []
    for arg in args:
        key, eq, value = arg.lstrip("+~").partition("=")
        if not eq:
            continue
        if key in known and value not in known[key]:
            hints.append(f"note: {key} takes one of: {', '.join(known[key])}")
        if key.startswith("sweep."):
            schema, key_there = SweepSpec, key.removeprefix("sweep.")
        else:
            schema, key_there = TrialConfig, key
        if key not in known and _field_type(schema, key_there) is bool and value.lower() not in BOOL_WORDS:
            hints.append(f"note: {key} takes true or false")
    return hints


def _field_type(schema: type, key: str) -> Any:
    """The annotated type of a dotted key in a dataclass schema (None when the key is not a field there)."""
    import dataclasses
    import typing

    kind: Any = schema
    for part in key.split("."):
        if not dataclasses.is_dataclass(kind):
            return None
        kind = typing.get_type_hints(kind).get(part)
    return kind
