"""search.screen=N: draw N candidates, predict what is known before training, train only the predicted best.

A RepVGG candidate's deploy speed, MACs and parameters depend only on its architecture, so a search can rank many
candidates before training any. The screen draws `search.screen` candidates from the space (Optuna's
RandomSampler, seeded by search.seed, with the same parameter names and steps the study samples), drops the
invalid ones and those over a budget (MACs, params, latency: all known here), and ranks the rest by non-dominated
sorting, then NSGA-II crowding distance (search/asha.py `rank`), of

    (deploy MACs, maximized: the accuracy proxy, since top1 is unknown before training;
     the study's other objectives, in their own directions: speed predicted, sizes counted)

so the first front holds the candidates no other is both bigger and faster than. The first `search.n_trials` of
that order (the predicted front first, then the next fronts) are enqueued in the study and are the only
candidates it trains; with search.fidelity=asha they are the rung-1 population. Speed comes from the trial's
`speed.predictor`: `lut` predicts it from the per-layer latency table in the sweep's speed folder (what makes
thousands of candidates take seconds once the table holds their layers); `measure` times each deploy form.
Sizes are counted from the layers (`profile.lut.plain_sizes`, fvcore's figures exactly) for plain deploy forms.

The first worker to start screens, holding the sweep folder's screen lock; its result is the study's user
attribute `screen` and the sweep folder's screen.csv, so later workers, restarts and reruns reuse it.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import optuna
import pandas as pd

from .. import files
from ..config import to_arch
from ..data import expected_num_classes
from ..devices import resolve_device
from ..errors import BadInputError
from ..locks import FileLock
from ..models import ArchConfig
from ..profile import arch_sizes, resolve_protocol
from ..profile.lut import LutError, plain_sizes, predicted_figure
from ..schema import OBJECTIVES
from ..trial import settings_from_config, typed_config
from ..trial.speed import deploy_speed
from .asha import RungEntry, nondominated_fronts, rank
from .plan import SearchPlan, budget_violations, candidate_config, suggest
from .storage import quiet

_log = logging.getLogger(__name__)
SCREEN_ATTR = "screen"  # study user attribute: the screen's summary (kept, drawn, ...), written once
SCREENED = "screened"  # user attribute of an enqueued candidate: its place in the screen's order
SCREEN_CSV = "screen.csv"
SCREEN_LOCK = "screen.lock"


def screen_order(rows: list[dict[str, Any]], objectives: list[str]) -> list[dict[str, Any]]:
    """The feasible rows ranked (front, crowding distance, draw order), each given its `front` and `rank`."""
    names = ["macs_proxy", *[o for o in objectives if o != "top1"]]
    directions = ["maximize", *[OBJECTIVES[o][0] for o in names[1:]]]
    feasible = [r for r in rows if r["feasible"]]
    points = [tuple(float(r[n if n != "macs_proxy" else "macs"]) for n in names) for r in feasible]
    entries = [RungEntry(r["candidate"], i, 0, p) for i, (r, p) in enumerate(zip(feasible, points))]
    front_of = {}
    for k, front in enumerate(nondominated_fronts(points, directions)):
        for i in front:
            front_of[feasible[i]["candidate"]] = k
    by_id = {r["candidate"]: r for r in feasible}
    ordered = []
    for position, e in enumerate(rank(entries, directions)):
        ordered.append({**by_id[e.trial_id], "front": front_of[e.trial_id], "rank": position})
    return ordered


def screen_candidates(plan: SearchPlan) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Draw, size, predict and rank `search.screen` candidates (nothing is trained); the table and a summary."""
    s, t0 = plan.settings, time.perf_counter()
    device = resolve_device(plan.base.get("device") or "auto")
    protocol = resolve_protocol(dict(plan.base["speed"]), device)
    side = int(plan.base["data"]["image_size"])
    lut = plan.base["speed"].get("predictor") == "lut"
    num_classes = expected_num_classes(typed_config(plan.base).data)
    draw = optuna.create_study(directions=plan.directions, sampler=optuna.samplers.RandomSampler(seed=s.seed))
    rows, seen, invalid = [], set(), 0
    with quiet():
        for _ in range(s.screen):
            params = suggest(draw.ask(), s.space)
            key = tuple(sorted(params.items()))
            if key in seen:
                continue
            seen.add(key)
            config = candidate_config(plan.base, s.space, params, plan.study_name)
            try:
                arch = to_arch(config["model"], config["variant"], num_classes)
                row = _row(plan, config, arch, params, side, lut, protocol, device)
            except (BadInputError, LutError) as exc:  # e.g. groups that do not divide a layer's channels
                invalid += 1
                _log.debug("screen: %s is not a candidate: %s", params, exc)
                continue
            rows.append(row)
    ordered = screen_order(rows, s.objectives)
    kept = ordered[: s.n_trials]
    keep_ids = {r["candidate"] for r in kept}
    out = [*ordered, *[{**r, "front": None, "rank": None} for r in rows if not r["feasible"]]]
    table = pd.DataFrame([{**r, "kept": r["candidate"] in keep_ids} for r in out])
    summary = {
        "drawn": s.screen,
        "distinct": len(seen),
        "invalid": invalid,
        "infeasible": sum(not r["feasible"] for r in rows),
        "front": sum(r["front"] == 0 for r in ordered),
        "kept": len(kept),
        "predictor": "lut" if lut else "measure",
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return table, summary


def _row(plan, config, arch: ArchConfig, params, side, lut, protocol, device) -> dict[str, Any]:
    s = plan.settings
    size = plain_sizes(arch, 224) if arch.plain and not arch.use_se else arch_sizes(arch, 224)["deploy"]
    if lut:
        speed = predicted_figure(arch, protocol, device, plan.sweep_folder.speed_dir, side)
    else:
        speed = deploy_speed(settings_from_config(config), plan.sweep_folder.speed_dir)
    over = budget_violations(s.constraints, size["macs"], size["params"])
    if s.constraints.max_latency_ms is not None:
        over["latency_ms"] = speed.latency_ms / s.constraints.max_latency_ms - 1
    return {
        "candidate": _params_key(params),
        **params,
        "macs": size["macs"],
        "params": size["params"],
        "images_per_s": speed.images_per_s,
        "latency_ms": speed.latency_ms,
        "feasible": all(v <= 0 for v in over.values()),
    }


def _params_key(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def ensure_screened(plan: SearchPlan, study: optuna.Study) -> dict[str, Any] | None:
    """Screen once per study (the first worker, under the folder's screen lock) and enqueue the kept candidates;
    returns the screen's summary (None without search.screen)."""
    if plan.settings.screen is None:
        return None
    done = study.user_attrs.get(SCREEN_ATTR)
    if done is not None:
        return done
    with FileLock(plan.sweep_folder.root / SCREEN_LOCK).acquire(wait=True, poll_s=0.5):
        study = optuna.load_study(study_name=study.study_name, storage=study._storage, sampler=study.sampler)
        done = study.user_attrs.get(SCREEN_ATTR)
        if done is not None:
            return done
        table, summary = screen_candidates(plan)
        files.write_csv(plan.sweep_folder.root / SCREEN_CSV, table)
        names = [c for c in table.columns if c in ("a", "b", "groups") or c.startswith("depth")]
        for _, row in table[table["kept"]].sort_values("rank").iterrows():
            params = {n: _native(row[n]) for n in names if not _missing(row[n])}
            study.enqueue_trial(params, user_attrs={SCREENED: int(row["rank"])}, skip_if_exists=False)
        study.set_user_attr(SCREEN_ATTR, summary)
        _log.info("screen: %s", summary)
        return summary


def screened_trials(plan: SearchPlan, study: optuna.Study) -> int:
    """How many candidates the study trains: search.n_trials, or fewer when the screen kept fewer."""
    summary = study.user_attrs.get(SCREEN_ATTR)
    return min(plan.settings.n_trials, summary["kept"]) if summary else plan.settings.n_trials


def _native(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
