"""Distributed: two real CPU processes (gloo) train a tiny RepVGG on digits and end with identical weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from support import wait_for
from torch import nn

from repvgg_search.data import DataConfig, build_loaders
from repvgg_search.distributed import (
    DistInfo,
    all_reduce_sum,
    cleanup,
    init_distributed,
    is_main_process,
    unwrap,
    wrap_ddp,
)
from repvgg_search.models import create_model
from repvgg_search.training import TrainConfig, build_optimizer, build_scheduler, evaluate, train_one_epoch

WORLD = 2
_DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID", "SUBMITIT_LOCAL_NTASKS")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    """One rank of a torchrun-like job: the environment torchrun would set, then the project's own set-up."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        GLOO_SOCKET_IFNAME="lo",  # the sandbox's loopback; gloo would otherwise pick the hostname's interface
    )
    torch.set_num_threads(1)  # two processes on two cores
    info = init_distributed(timeout_s=60)
    try:
        data = DataConfig(batch_size=32)
        kw = {"device": info.device, "seed": 0, "distributed": True, "rank": info.rank, "world_size": info.world_size}
        train, val, _ = build_loaders(data, **kw)
        torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
        model = wrap_ddp(create_model("a0", num_classes=10, depths=(1, 2, 2, 2, 1), a=0.25, b=0.25), info)
        cfg = TrainConfig(epochs=2, base_lr=0.2)
        opt = build_optimizer(model, cfg, data.batch_size * info.world_size)
        sched = build_scheduler(opt, cfg, len(train))
        for epoch in range(cfg.epochs):
            stats = train_one_epoch(model, train, opt, sched, cfg=cfg, device=info.device, epoch=epoch, seed=0)
        scores = evaluate(model, val, device=info.device)
        local_val = evaluate(model, val, device=info.device, reduce=False)["total"]  # this rank's shard only
        state = unwrap(model).state_dict()
        torch.save(
            {"state": state, "stats": stats, "scores": scores, "local_val": local_val, "info": info},
            Path(out_dir) / f"{rank}.pt",
        )
    finally:
        cleanup()


def _spawn(port: int, out_dir: Path, timeout_s: float = 150) -> None:
    ctx = mp.spawn(_worker, args=(port, str(out_dir)), nprocs=WORLD, join=False)
    try:  # join waits up to 1 s and re-raises a worker's exception
        wait_for(lambda: ctx.join(timeout=1), timeout_s, "the distributed workers to end", interval=0)
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()


@pytest.mark.slow
def test_two_gloo_processes_train_to_identical_weights(tmp_path):
    _spawn(_free_port(), tmp_path)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in range(WORLD))
    assert (r0["info"].rank, r1["info"].rank, r0["info"].world_size) == (0, 1, WORLD) and r1["info"].is_distributed
    assert r0["state"].keys() == r1["state"].keys()
    for key, value in r0["state"].items():  # parameters and (averaged) BN statistics agree bit for bit
        assert torch.equal(value, r1["state"][key]), key
    assert r0["local_val"] + r1["local_val"] == 359 == r0["scores"]["total"] == r1["scores"]["total"]
    assert r0["scores"] == r1["scores"] and r0["scores"]["top1"] > 30  # it learned something in 2 epochs
    assert r0["stats"]["steps"] == r1["stats"]["steps"] == -(-1437 // WORLD) // 32
    assert r0["stats"]["loss"] == r1["stats"]["loss"]  # epoch statistics are summed over ranks


def test_a_single_process_is_not_distributed(monkeypatch):
    for var in _DIST_VARS:
        monkeypatch.delenv(var, raising=False)
    info = init_distributed()
    assert info == DistInfo(0, 1, 0, False, info.device) and info.device.type in ("cpu", "cuda")
    assert is_main_process()
    model = nn.Linear(2, 2)
    assert wrap_ddp(model, info) is model and unwrap(model) is model
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(all_reduce_sum(values), values)
    cleanup()  # a no-op without a process group


def test_rank_is_known_before_the_trial_lock_and_log(tmp_path):
    """Task 1 of a two-task submitit job has no RANK until the package exports it: it must neither take the trial's
    lock (rank 0 holds it for all ranks; taking it too would deadlock) nor write the trial's log."""
    from repvgg_search.locks import holding
    from repvgg_search.trial.folder import LOCK

    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
    env.update(SUBMITIT_EXECUTOR="local", SUBMITIT_LOCAL_JOB_ID="7", SUBMITIT_LOCAL_NTASKS="2",
               SUBMITIT_LOCAL_GLOBALID="1", SUBMITIT_LOCAL_LOCALID="1", SUBMITIT_LOCAL_NODEID="0",
               SUBMITIT_LOCAL_JOB_NUM_NODES="1")  # fmt: skip
    code = (
        "import os, sys; from pathlib import Path\n"
        "from repvgg_search.trial.folder import working_in, log_file\n"
        "d = Path(sys.argv[1])\n"
        "with working_in(d, wait=False), log_file(d / 'trial.log'):\n"
        "    print('rank', os.environ['RANK'], 'inside')\n"
    )
    with holding(tmp_path / LOCK):  # rank 0 trains the trial
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "rank 1 inside" and not (tmp_path / "trial.log").exists()
