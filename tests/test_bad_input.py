"""Bad input, refused: from every command line with exit status 2, a message naming the field (or file) and what is
allowed, no traceback, and no file or folder written; from the Python API with a BadInputError."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from support import REPO, CliServer, environ, run_cli
from torch import nn

from repvgg_search.errors import BadInputError
from repvgg_search.models import create_model, load_state_dict, reparameterize_model
from repvgg_search.profile import complexity, throughput

# Each case is a command line; all but one per command run forked off one warm interpreter (support.CliServer),
# which imports torch, Hydra and the package once; the first case of each list starts a real `python -m` process.
WARM = [
    "repvgg_search.trial.cli",
    "repvgg_search.sweep.cli",
    "repvgg_search.profile.cli",
    "repvgg_search.analysis.cli",
    "repvgg_search.search.cli",
]
A_FILE = "a_file.txt"  # created in the working folder of each case: a path that is a file, not a folder

TRAIN = [
    (["+foo=1"], "unknown config key 'foo'"),
    (["device=bogus"], "device='bogus'"),
    ([f"output_dir={A_FILE}"], "is a file, not a folder"),
    ([f"hydra.run.dir={A_FILE}"], A_FILE),
    (["model=b7"], "Could not find 'model/b7'"),
    (["variant=bogus"], "Could not find 'variant/bogus'"),
    (["data=bogus"], "Could not find 'data/bogus'"),
    (["train=bogus"], "Could not find 'train/bogus'"),
    (["speed=bogus"], "Could not find 'speed/bogus'"),
    (["data.batch_size=abc"], "data.batch_size"),
    (["train.epochs=1.5"], "train.epochs"),
    (["train.epochs=0"], "train.epochs=0 must be an integer >= 1"),
    (["data.batch_size=100000000"], "data.batch_size=100000000 (x 1 process(es)) exceeds the 1438 training images"),
    (["data.image_size=33"], "data.image_size=33 must be a multiple of 32"),
    (["seed=-1"], "seed=-1 must be an integer in [0, 2**63)"),
    (["speed.input_size=8"], "speed.input_size=8 must be an integer >= 32"),
    (["speed.warmup=-1"], "speed.warmup=-1 must be an integer >= 0"),
    (["speed.dtype=float8"], "speed.dtype='float8' is not allowed"),
    (["gate.dtype=float16"], "gate.dtype='float16' is not allowed; allowed: float32, float64"),
    (["model.a=-1"], "width multiplier a must be a finite number > 0"),
    (["model.groups=3", "model=b1"], "groups=3 does not divide"),
    (["variant.branches=[3x3,5x5]"], "variant.branches: ['5x5'] unknown"),
    (["tracking.mode=loud"], "tracking.mode='loud' is unknown"),
    (["keep_checkpoint=some"], "keep_checkpoint='some' is unknown; allowed: all, deploy, none"),
    (["quant.calibrate=kl"], "quant.calibrate='kl' is unknown; allowed: minmax, entropy, percentile"),
    (["quant.calib_images=0"], "quant.calib_images=0 must be an integer >= 1"),
    (["quant.speed=fastest"], "quant.speed='fastest' is unknown; allowed: none, cpu"),
    (["speed.runtime=tensorrt"], "speed.runtime='tensorrt' is not allowed; allowed: eager, compile, onnxruntime"),
    # refused before the first epoch, not after the training (issue 23)
    (["quant.ptq=true", "quant.calib_images=100000000"], "quant.calib_images=100000000 must be between 1 and the 1438"),
    (["speed.runtime=onnxruntime", "speed.dtype=float16"], "speed.runtime=onnxruntime runs on the CPU in float32"),
    (["data.image_size=4096"], "data.image_size=4096 is above the largest allowed, 1024 px"),
    # Hydra's type errors name the key; the allowed values follow (issue 23)
    (["quant.ptq=maybe"], "quant.ptq takes true or false"),
    (["keep_checkpoint=[a,b]"], "keep_checkpoint takes one of: all, deploy, none"),
    (["speed.dtype=[x]"], "speed.dtype takes one of: float32, float16, bfloat16, float64"),
]
SWEEP = [
    (["+sweep=nope"], "Could not find 'sweep/nope'"),
    (["+sweep=ablation", f"sweep.dir={A_FILE}"], "sweep.dir=a_file.txt is a file"),
    (["+sweep=ablation", "launcher=bogus"], "Could not find 'launcher/bogus'"),
    (["+sweep=ablation", "launcher.partition=gpu"], "partition"),
    (["+sweep=ablation", "++sweep.axes={nonsense.field:[1]}"], "'nonsense.field' is not a trial config field"),
    (["+sweep=ablation", "sweep.axes={variant:[full,bogus]}"], "unknown variant 'bogus'"),
    (["+sweep=ablation", "sweep.action=explode"], "sweep.action='explode' is unknown"),
    (["+sweep=ablation", "sweep.seeds=0"], "sweep.seeds=0 must be >= 1"),
    (["+sweep=ablation", "++sweep.axes.seed=[0,1]"], "both give the seeds"),
    (["+sweep=ablation", "sweep.poll_s=0"], "sweep.poll_s"),
    (["+sweep=width_search", "search.storage=notaurl"], "search.storage='notaurl' is neither an RDB URL"),
    (["+sweep=width_search", "sweep.seeds=3"], "sweep.seeds=3 applies to grid sweeps"),
    (["+sweep=width_search", "search.objectives=[top1,flops]"], "'flops' is unknown"),
    (["+sweep=width_search", "search.n_trials=0"], "search.n_trials=0 must be >= 1"),
    (["+sweep=width_search", "search.objectives=[int8_top1,int8_images_per_s]"], "add quant.ptq=true"),
    (["+sweep=width_search", "++search.smapler=tpe"], "smapler"),
    # names that become folders are safe slugs: never outside outputs/sweeps, never outputs/sweeps itself (issue 23)
    (["+sweep=ablation", "sweep.name=../../x"], "sweep.name='../../x' becomes a folder name and must match"),
    (["+sweep=ablation", "sweep.name="], "sweep.name='' becomes a folder name and must match"),
    (["+sweep=ablation", "sweep.name=" + "n" * 300], "must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"),
    (["+sweep=width_search", "sweep.name=a/b"], "sweep.name='a/b' becomes a folder name"),
    (["+sweep=ablation", "quant.ptq=true", "quant.calib_images=100000000"], "quant.calib_images=100000000 must be"),
    (["+sweep=ablation", "speed.runtime=onnxruntime", "speed.dtype=float16"], "speed.runtime=onnxruntime runs on"),
    (["+sweep=ablation", "sweep.seeds=1000000000", "sweep.dry_run=true"], "the sweep plans 11000000000 trials"),
    (["+sweep=ablation", "sweep.dry_run=perhaps"], "sweep.dry_run takes true or false"),
    (["+sweep=ablation", "sweep.action=[run]"], "sweep.action takes one of: run, status, collect, cancel"),
    (["+sweep=ablation", "++sweep.axes={data.image_size:[32,2048]}"], "data.image_size=2048 is above"),
]
PROFILE = [
    (["model=b7"], "Could not find 'model/b7'"),
    (["speed.dtype=float8"], "speed.dtype='float8'"),
    (["device=cuda:3"], "no CUDA device is visible"),
]
REPORT = [
    (["missing", "-o", "out"], "source not found"),
    ([A_FILE, "-o", "out", "--state", "bogus"], "unknown state 'bogus'"),
]


@pytest.fixture(scope="module")
def cli() -> Iterator[CliServer]:
    server = CliServer(WARM, env=environ(PYTHONPATH=str(REPO)))
    yield server
    server.close()


def refused(tmp_path: Path, module: str, args: list[str], cli: CliServer | None = None) -> str:
    """Run the command in an empty folder (plus A_FILE): exit 2, no traceback, nothing written. Its output. Without
    `cli`, in a new Python process."""
    (tmp_path / A_FILE).write_text("not a folder\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    if cli is None:
        proc = run_cli(module, *args, cwd=tmp_path, env=environ(PYTHONPATH=str(REPO)), timeout=120)
    else:
        proc = cli.run(module, *args, cwd=tmp_path)
    assert proc.returncode == 2, f"{args}: exit {proc.returncode}\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}"
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-2000:]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "the refused command wrote files"
    return proc.stderr + proc.stdout


def _cases(cases: list[tuple[list[str], str]]) -> list:
    """The cases as parameters, the first marked to run in a new process (`fresh`)."""
    return [
        pytest.param(args, message, i == 0, id=" ".join(args) + (" (new process)" if i == 0 else ""))
        for i, (args, message) in enumerate(cases)
    ]


@pytest.mark.parametrize(("args", "message", "fresh"), _cases(TRAIN))
def test_train_refuses(tmp_path, cli, args, message, fresh):
    assert message in refused(tmp_path, "repvgg_search.train", args, None if fresh else cli)


@pytest.mark.parametrize(("args", "message", "fresh"), _cases(SWEEP))
def test_sweep_refuses(tmp_path, cli, args, message, fresh):
    assert message in refused(tmp_path, "repvgg_search.sweep", args, None if fresh else cli)


@pytest.mark.parametrize(("args", "message", "fresh"), _cases(PROFILE))
def test_profile_refuses(tmp_path, cli, args, message, fresh):
    assert message in refused(tmp_path, "repvgg_search.profile", args, None if fresh else cli)


@pytest.mark.parametrize(("args", "message", "fresh"), _cases(REPORT))
def test_report_refuses(tmp_path, cli, args, message, fresh):
    assert message in refused(tmp_path, "repvgg_search.analysis.report", args, None if fresh else cli)


def test_report_refuses_an_output_that_is_a_file(tmp_path, cli):
    (tmp_path / "src").mkdir()
    assert "is a file, not a folder" in refused(tmp_path, "repvgg_search.analysis.report", ["src", "-o", A_FILE], cli)


def _checkpoints(folder: Path) -> dict[str, str]:
    """The profiler's 8 bad checkpoint= values, and the message each must give."""
    good = create_model("a0").state_dict()
    torch.save(good, folder / "good.pt")
    raw = (folder / "good.pt").read_bytes()
    (folder / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    (folder / "rand.pt").write_bytes(os.urandom(2000))
    (folder / "empty.pt").write_bytes(b"")
    (folder / "dir").mkdir()
    torch.save(create_model("b0").state_dict(), folder / "other.pt")
    torch.save({"foo": torch.zeros(2)}, folder / "keys.pt")
    torch.save({"x": Evil()}, folder / "evil.pt")
    return {"missing.pt": "does not exist", "rand.pt": "weights file", "empty.pt": "is empty",
            "trunc.pt": "cannot be read as a weights file", "dir": "is a directory", "other.pt": "does not fit this model",
            "keys.pt": "351 missing", "evil.pt": "is not a plain weights file"}  # fmt: skip


class Evil:
    """A pickle that would run a command if it were ever loaded without weights_only."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_profile_refuses_every_bad_checkpoint(tmp_path, cli):
    cases = _checkpoints(tmp_path)
    for name, message in cases.items():
        out = refused(tmp_path, "repvgg_search.profile", [f"checkpoint={tmp_path / name}"], cli)
        assert message in out and name in out, (name, out[-500:])
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, d: load_state_dict(m, d / "rand.pt"), "weights file"),
        (lambda m, d: load_state_dict(m, {"stage0.rbr_dense.conv.weight": "x"}), "holds no weights"),
        (lambda m, d: throughput(m, dtype="float8"), "speed.dtype='float8'"),
        (lambda m, d: throughput(m, iters=0), "speed.iters=0"),
        (lambda m, d: throughput(m, batch_size=0), "speed.batch_size=0"),
        (lambda m, d: throughput(m, input_size=(3, 32, 48)), "must be (channels, side, side)"),
        (lambda m, d: complexity(m, input_size=(3, 224)), "must be (channels, height, width)"),
        (lambda m, d: complexity(m, input_size=(3, 0, 0)), "must be (channels, height, width)"),
        (lambda m, d: complexity(m, input_size=(1, 224, 224)), "takes 3 input channels"),
        (lambda m, d: create_model("a0", use_se="yes"), "use_se must be true or false"),
        (lambda m, d: reparameterize_model(nn.Linear(2, 2)), "takes a model built by this package"),
        (lambda m, d: create_model("a0", variant={"name": "x", "bn": ["1x1"], "branches": ["3x3"]}), "variant.bn"),
        (lambda m, d: create_model("a0", variant={"name": "../x", "post_bn": True}), "variant.name='../x' becomes"),
    ],
)
def test_the_python_api_refuses_with_bad_input_errors(tmp_path, call, message):
    (tmp_path / "rand.pt").write_bytes(os.urandom(2000))
    with pytest.raises(BadInputError) as err:
        call(create_model("a0", num_classes=10).eval(), tmp_path)
    assert message in str(err.value)
