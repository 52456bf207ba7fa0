"""A validated search: candidates from parameters, budgets, the plan every worker gets (search.json)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

from ..config import UNSET_SPEED_FIELDS
from ..jobs.launchers import Launcher
from ..models import VARIANTS, ArchConfig, ArchError, arch_config
from ..profile import SpeedProtocol, arch_sizes
from ..sweep.folder import SweepFolder
from ..sweep.spec import base_trial_config
from ..trial import NOT_IN_ID, settings_from_config
from .asha import PRE_TRAINING_OBJECTIVES, Ladder
from .settings import (
    OBJECTIVES,
    QUANT_OBJECTIVES,
    ConstraintSpec,
    SearchError,
    SearchSettings,
    SpaceSpec,
    axis_values,
    search_settings,
    space_size,
)
from .storage import check_storage, is_rdb_url, make_storage, mask_url, quiet
from .study import Budget, make_pruner, make_sampler, worker_seed

SEARCH_JSON = "search.json"  # the plan, in the sweep folder (workers started by hand read it)
WORKERS_JSONL = "workers.jsonl"  # the worker jobs' submissions


def suggest(trial: optuna.Trial, space: SpaceSpec) -> dict[str, Any]:
    """Draw a candidate (a retried trial gets its original parameters back)."""
    params = {
        "a": trial.suggest_float("a", space.a.low, space.a.high, step=space.a.step),
        "b": trial.suggest_float("b", space.b.low, space.b.high, step=space.b.step),
        "groups": trial.suggest_categorical("groups", list(space.groups)),
    }
    for stage, choices in sorted(space.depths.items()):
        if len(choices) > 1:
            params[f"depth{stage}"] = trial.suggest_categorical(f"depth{stage}", list(choices))
    return params


def candidate_config(base: dict[str, Any], space: SpaceSpec, params: dict[str, Any], group: str) -> dict[str, Any]:
    """The full trial config of a candidate: the base config with the searched fields replaced."""
    cfg = copy.deepcopy(base)
    model = cfg["model"]
    model["name"] = space.preset or model["name"]
    if space.variant:  # a named variant replaces the base config's block design
        cfg["variant"] = VARIANTS[space.variant].to_config()
    # Rounded so that 0.1 * 3 and 0.3 are the same trial (the trial id hashes the config).
    model.update(a=round(float(params["a"]), 10), b=round(float(params["b"]), 10), groups=int(params["groups"]))
    if space.depths:
        depths = list(model.get("depths") or arch_config(model["name"]).depths)
        for stage, choices in space.depths.items():
            depths[stage] = int(params.get(f"depth{stage}", choices[0]))
        model["depths"] = depths
    cfg["tracking"]["group"] = group
    depths = f"-d{'.'.join(map(str, model['depths']))}" if space.depths else ""
    variant = cfg["variant"].get("name", "custom")
    cfg["tracking"]["name"] = (
        f"{model['name']}-{variant}-s{cfg['seed']}-a{model['a']:g}-b{model['b']:g}-g{model['groups']}{depths}"
    )
    return cfg


def deploy_size(arch: ArchConfig) -> tuple[int, int]:
    """(MACs, params) of the deploy form at 3x224x224, as the trial records them, known before any training."""
    size = arch_sizes(arch, 224)["deploy"]
    return size["macs"], size["params"]


def budget_violations(c: ConstraintSpec, macs: int, params: int) -> dict[str, float]:
    """Relative excess over each MAC/params budget (> 0: violated, <= 0: met), for the budgets that are set."""
    out = {}
    if c.max_gmacs is not None:
        out["gmacs"] = macs / 1e9 / c.max_gmacs - 1
    if c.max_mparams is not None:
        out["mparams"] = params / 1e6 / c.max_mparams - 1
    return out


@dataclass
class SearchPlan:
    """A validated search: settings, base trial config, storage, folder, workers."""

    folder: str
    name: str  # sweep name
    study_name: str
    storage: str  # RDB URL, or the journal file's path
    settings: SearchSettings
    base: dict[str, Any]  # the base trial config (resolved)
    definition: str  # digest of what determines the study's results (a changed one needs a new folder/study)
    workers: int = 1
    threads: int | None = None  # torch threads per trial (local launcher)
    poll_s: float = 2.0
    smallest: dict[str, Any] = field(default_factory=dict)  # the space's smallest candidate (shown in the plan)

    @property
    def sweep_folder(self) -> SweepFolder:
        return SweepFolder(Path(self.folder))

    @property
    def is_rdb(self) -> bool:
        return is_rdb_url(self.storage)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o][0] for o in self.settings.objectives]

    @property
    def ladder(self) -> Ladder | None:
        """The rungs of a multi-fidelity search (search.fidelity=asha), None for a full-fidelity one."""
        s = self.settings
        if s.fidelity == "none":
            return None
        epochs = int(self.base["train"]["epochs"])
        return Ladder.of(s.min_epochs, s.eta, epochs, s.objectives, self.directions, s.top1_tolerance)

    @property
    def budget(self) -> Budget:
        s = self.settings
        return Budget(
            s.n_trials, s.max_failed or s.n_trials, s.max_skipped or max(100, 10 * s.n_trials), space_size(s.space)
        )

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["storage"] = mask_url(self.storage)  # credentials stay out of the results folder
        if data["settings"]["storage"]:
            data["settings"]["storage"] = mask_url(data["settings"]["storage"])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], storage: str | None = None) -> SearchPlan:
        data = {**data, "settings": search_settings(data["settings"])}
        if storage:
            data["storage"] = storage
        return cls(**data)


def plan_search(cfg: DictConfig, folder: SweepFolder, launcher: Launcher) -> SearchPlan:
    """Validate the whole search (settings, base config, budgets, storage) before anything is created.

    One worker per job the launcher runs at once; each trial gets the launcher's threads.
    """
    settings = search_settings(cfg.search)
    base = base_trial_config(cfg)
    needs_ptq = [o for o in settings.objectives if o in QUANT_OBJECTIVES]
    if needs_ptq and not base["quant"]["ptq"]:
        raise SearchError(f"search.objectives {needs_ptq} are measured by INT8 quantization: add quant.ptq=true")
    workers, threads = launcher.max_parallel, launcher.threads
    if threads is not None and base.get("threads") is None:
        base["threads"] = threads
    name = cfg.sweep.name
    study_name = settings.study_name or name
    storage = study_storage(settings.storage, folder)
    if settings.fidelity != "none":  # FidelityError names search.eta / min_epochs / objectives
        Ladder.of(settings.min_epochs, settings.eta, int(base["train"]["epochs"]), settings.objectives,
                  [OBJECTIVES[o][0] for o in settings.objectives], settings.top1_tolerance)  # fmt: skip
    plan = SearchPlan(
        str(folder.root),
        name,
        study_name,
        storage,
        settings,
        base,
        definition_digest(settings, base),
        workers,
        threads,
        float(cfg.sweep.poll_s),
    )
    make_sampler(settings, settings.seed)  # refuses sampler_options the sampler does not take
    plan.smallest = check_budgets(plan)
    check_screen(settings)
    check_storage(plan.storage, settings)
    return plan


def check_screen(s: SearchSettings) -> None:
    """Refuse a screen that cannot rank (before anything is launched): objectives measured after training."""
    late = [o for o in s.objectives if o != "top1" and o not in PRE_TRAINING_OBJECTIVES]
    if s.screen is not None and late:
        raise SearchError(
            f"search.screen ranks candidates by what is known before training ({', '.join(PRE_TRAINING_OBJECTIVES)}"
            f"); search.objectives {late} are measured after training: drop search.screen"
        )


def study_storage(storage: str | None, folder: SweepFolder) -> str:
    """An RDB URL as given, or a journal file: null = <sweep folder>/study.journal; a `*.journal` path, relative
    to the sweep folder unless absolute. Anything else is refused (a typo would become a stray file)."""
    if storage is None:
        return str((folder.root / "study.journal").resolve())
    if is_rdb_url(storage):
        return storage
    if not storage.endswith(".journal"):
        raise SearchError(
            f"search.storage={storage!r} is neither an RDB URL (postgresql+psycopg2://user:pw@host/db, sqlite:///f.db) "
            "nor a journal file ending in .journal (relative paths are taken from the sweep folder); null = "
            "<sweep folder>/study.journal"
        )
    path = Path(storage).expanduser()
    return str((path if path.is_absolute() else folder.root / path).resolve())


def definition_digest(s: SearchSettings, base: dict[str, Any]) -> str:
    """What determines the study's results: the base trial config and the search, not its size or plumbing."""
    plumbing = ("tracking", "threads", "device", "output_dir", "speed_dir", "gate")
    trial_part = {k: v for k, v in base.items() if k not in plumbing}
    trial_part["data"] = {k: v for k, v in base["data"].items() if k not in NOT_IN_ID["data"]}
    if "speed" in base:  # unset (null) speed fields as their schema defaults were before: a study's digest holds
        defaults = SpeedProtocol().fields()
        trial_part["speed"] = {
            k: defaults[k] if v is None and k in UNSET_SPEED_FIELDS else v for k, v in base["speed"].items()
        }
    search_part = {
        k: v
        for k, v in dataclasses.asdict(s).items()
        if k in ("space", "objectives", "constraints", "sampler", "sampler_options", "pruner", "seed")
    }
    # Multi-fidelity and screening settings enter only when set: a study made before they existed keeps its digest.
    for key, default in (("fidelity", "none"), ("min_epochs", None), ("eta", 3), ("screen", None),
                         ("top1_tolerance", "auto")):  # fmt: skip
        if (s.fidelity != "none" and key in ("min_epochs", "eta")) or getattr(s, key) != default:
            search_part[key] = getattr(s, key)
    text = json.dumps({"trial": trial_part, "search": search_part}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _arch_of(plan: SearchPlan, params: dict[str, Any]) -> ArchConfig:
    return settings_from_config(candidate_config(plan.base, plan.settings.space, params, plan.study_name)).arch


def corner_candidates(space: SpaceSpec) -> list[dict[str, Any]]:
    """The smallest candidates: lowest multipliers and depths, for each groups value (largest first)."""
    depths = {f"depth{k}": min(v) for k, v in space.depths.items() if len(v) > 1}
    a_values = (axis_values(space.a) or [space.a.low])[:8]
    b_values = (axis_values(space.b) or [space.b.low])[:8]
    # Small multipliers may leave channels that a groups value does not divide: try the next ones up.
    return [
        {"a": a, "b": b, "groups": g, **depths}
        for g in sorted(space.groups, reverse=True)
        for a in a_values
        for b in b_values
    ]


def check_budgets(plan: SearchPlan) -> dict[str, Any]:
    """The smallest valid candidate's size; SearchError when no candidate can meet a MAC or params budget."""
    sizes, errors = [], []
    seen: set[int] = set()
    for params in corner_candidates(plan.settings.space):
        if params["groups"] in seen:
            continue
        try:
            arch = _arch_of(plan, params)
        except ArchError as exc:  # other bad base settings (data, train, ...) are reported as they are
            errors.append(str(exc))
            continue
        seen.add(params["groups"])
        sizes.append((*deploy_size(arch), params))
    if not sizes:
        raise SearchError(f"no corner of search.space is a valid architecture: {errors[0]}")
    macs, params, at = min(sizes, key=lambda t: t[0])
    _refuse_unreachable(plan.settings.constraints, macs, min(t[1] for t in sizes), at)
    return {"macs": macs, "params": min(t[1] for t in sizes), "params_at": at}


def _refuse_unreachable(c: ConstraintSpec, macs: int, params: int, at: dict[str, Any]) -> None:
    where = ", ".join(f"{k}={v}" for k, v in at.items())
    hint = "raise the budget or lower search.space.a.low / b.low / the depth choices"
    if c.max_gmacs is not None and macs / 1e9 > c.max_gmacs:
        raise SearchError(
            f"search.constraints.max_gmacs={c.max_gmacs} cannot be met: the smallest candidate of the space "
            f"({where}) has {macs / 1e9:.4g} GMACs (deploy form, fvcore, 3x224x224); {hint}"
        )
    if c.max_mparams is not None and params / 1e6 > c.max_mparams:
        raise SearchError(
            f"search.constraints.max_mparams={c.max_mparams} cannot be met: the smallest candidate of the space "
            f"has {params / 1e6:.4g} M parameters (deploy form); {hint}"
        )


def prepare_study(plan: SearchPlan) -> optuna.Study:
    """Create the study, or check that the existing one was made by this same search definition."""
    with quiet():
        study = optuna.create_study(
            storage=make_storage(plan.storage, plan.settings),
            study_name=plan.study_name,
            directions=plan.directions,
            load_if_exists=True,
        )
    found = study.user_attrs.get("definition")
    if found is None:
        study.set_user_attr("definition", plan.definition)
        study.set_user_attr("objectives", plan.settings.objectives)
        study.set_user_attr("sweep_folder", plan.folder)
    elif found != plan.definition:
        raise SearchError(
            f"study {plan.study_name!r} in {mask_url(plan.storage)} was made by another search definition "
            f"(space, objectives, budgets, sampler or base config differ); its trials are kept. Use "
            f"search.study_name=NAME (and sweep.dir=DIR) for this definition"
        )
    if study.metric_names is None:  # dashboards and `study.trials_dataframe()` name the objectives
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(plan.settings.objectives))
    return study


def open_study(plan: SearchPlan, worker: int) -> optuna.Study:
    """A worker's handle on the study, with its own sampler stream."""
    storage = make_storage(plan.storage, plan.settings)
    with quiet():
        study_id = storage.get_study_id_from_name(plan.study_name)
        done = len(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))
        sampler = make_sampler(plan.settings, worker_seed(plan.settings.seed, worker, done))
        return optuna.load_study(
            study_name=plan.study_name,
            storage=storage,
            sampler=sampler,
            pruner=make_pruner(plan.settings, plan.base["train"]["epochs"]),
        )
