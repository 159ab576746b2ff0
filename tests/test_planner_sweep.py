"""Sweeps that scale out: a real Dask LocalCluster ranks like the local pool, and a sweep
killed midway resumes from its JSON Lines file without redoing finished chunks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from parsim.planner import plan
from parsim.planner_grid import Space
from parsim.planner_sweep import read_done
from parsim.scenario import load_scenario

from conftest import ROOT, SCENARIOS

LLAMA = SCENARIOS / "llama3-70b-64-h100.toml"


def _ranking(res):
    return [(r["gpus"], r["parallel"], r["training"], r["step_time_s"], r["memory_bytes"])
            for r in res["layouts"]]


def test_dask_local_cluster_ranks_like_the_local_pool():
    distributed = pytest.importorskip("dask.distributed")
    sc = load_scenario(LLAMA)
    space = Space(gpus=(64,), tp=(4, 8))
    local = plan(sc, space, top=15, retime=0, workers=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        remote = plan(sc, space, top=15, retime=0, dask=cluster.scheduler_address)
    assert remote["chunks"]["run"] == local["chunks"]["run"] > 2
    assert remote["evaluated"] == local["evaluated"]
    assert remote["infeasible"] == local["infeasible"]
    assert _ranking(remote) == _ranking(local)
    assert remote["pareto"] == local["pareto"]


def test_killed_sweep_resumes_without_redoing_chunks(tmp_path):
    out = tmp_path / "results.jsonl"
    cmd = [sys.executable, "-m", "parsim", "plan", str(LLAMA), "--gpus", "32:128", "--workers", "1",
           "--retime", "0", "--quiet", "--json", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= 5:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)        # a crash: no cleanup, no final output
    proc.wait()
    with open(out, "a") as f:                 # and a line cut short mid-write
        f.write('{"spec": "truncated')
    lines = [json.loads(line) for line in out.read_text().splitlines()[:-1]]
    finished = {rec["chunk"] for rec in lines}
    assert 5 <= len(finished)

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    resumed = json.loads(rerun.stdout)
    total = resumed["chunks"]["chunks"]
    assert len(finished) < total, "the first run finished before it was killed"
    assert resumed["chunks"]["resumed"] == len(finished)
    assert resumed["chunks"]["run"] == total - len(finished)
    # every chunk is in the file exactly once (the truncated line is skipped)
    keys = [json.loads(line)["chunk"] for line in out.read_text().splitlines()
            if line.startswith('{"spec": "') and line.endswith("}")]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == total

    sc = load_scenario(LLAMA)
    fresh = plan(sc, Space(gpus=(32, 64, 128)), retime=0, workers=1)
    assert _ranking(resumed) == _ranking(fresh)
    assert resumed["evaluated"] == fresh["evaluated"]
    assert resumed["infeasible"] == fresh["infeasible"]
    assert resumed["pareto"] == fresh["pareto"]
    assert len(read_done(out, next(iter(lines))["spec"])) == total
