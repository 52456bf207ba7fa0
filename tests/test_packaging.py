"""`pip install .` (a wheel, not editable) into a fresh venv, then every entry point from another directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from support import QUICK_TRIAL, REPO

TRIAL = [*QUICK_TRIAL, "speed.warmup=1"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A new venv holding only the project's wheel; its dependencies (torch is GBs) come from this test
    environment through a path entry, so the project itself can only come from the installed wheel."""
    root = tmp_path_factory.mktemp("pkg")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root / "venv"], check=True)
    site = next((root / "venv" / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # This environment's pip installs into the new venv (pip --python): a real `pip install .` of a wheel it builds.
    pip = [sys.executable, "-m", "pip", "--python", str(root / "venv" / "bin" / "python"), "install", "--quiet"]
    subprocess.run([*pip, "--no-deps", "--no-build-isolation", str(REPO)], check=True, cwd=root, timeout=600)
    return root


def run(venv: Path, *cmd: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """A command of the venv's, from a directory that holds nothing of the repository."""
    work = venv / "work"
    work.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'venv' / 'bin'}:{env['PATH']}"
    proc = subprocess.run(list(cmd), cwd=work, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-1500:]}{proc.stderr[-2500:]}"
    return proc


def test_the_package_comes_from_the_wheel_with_its_configs(venv):
    out = run(venv, "python", "-c", "import repvgg_search, pathlib; print(pathlib.Path(repvgg_search.__file__).parent)")
    package = Path(out.stdout.strip())
    assert "site-packages" in package.parts and REPO not in package.parents
    assert (package / "conf" / "sweep" / "ablation.yaml").exists() and (
        package / "conf" / "variant" / "full.yaml"
    ).exists()
    assert (package / "analysis" / "paper_reference.yaml").exists()


def test_every_entry_point_runs_from_another_directory(venv):
    work = venv / "work"
    fast = ["speed.batch_size=2", "speed.iters=1", "speed.warmup=1", "speed.rounds=1"]
    run(venv, "repvgg-profile", "model=a0", *fast)
    run(venv, "python", "-m", "repvgg_search.profile", "model=a0", "model.a=0.5", "variant=qarepvgg", *fast)
    out = run(venv, "repvgg-train", *TRIAL, "output_dir=trial")
    assert json.loads(out.stdout.strip().splitlines()[-1])["status"] == "completed"
    run(venv, "python", "-m", "repvgg_search.train", *TRIAL, "output_dir=trial")  # done: reports, does not retrain
    for sweep in ("ablation", "width_search"):
        run(venv, "repvgg-sweep", f"+sweep={sweep}", "sweep.dry_run=true", *TRIAL)
    run(venv, "python", "-m", "repvgg_search.sweep", "+sweep=ablation", "sweep.dry_run=true", *TRIAL)  # the module too
    assert (work / "outputs" / "sweeps" / "ablation" / "sweep.json").exists()
    run(venv, "repvgg-report", "trial", "-o", "report")
    run(venv, "python", "-m", "repvgg_search.analysis.report", "trial", "-o", "report2")
    assert (work / "report" / "report.html").exists() and (work / "report2" / "report.md").exists()
    assert "SWEEP_DIR" in run(venv, "repvgg-search-worker", "--help").stdout
    assert "SWEEP_DIR" in run(venv, "python", "-m", "repvgg_search.search", "--help").stdout
    run(venv, "repvgg-export", "trial", "--format", "torch_export")
    run(venv, "python", "-m", "repvgg_search.deploy", "trial", "--format", "onnx")
    assert (work / "trial" / "export" / "deploy.pt2").exists() and (work / "trial" / "export" / "deploy.onnx").exists()
