"""The planner: the vectorised evaluator equals the analytical engine, ranking, Pareto,
objectives, the CLI's JSON, and DES re-timing."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from parsim.engines import analytical
from parsim.errors import ParsimError, ScenarioError
from parsim.planner import pareto, plan, scenario_of
from parsim.planner_cli import parse_gpus
from parsim.planner_grid import Context, Space, evaluate, layout_dict, skeletons
from parsim.scenario import load_scenario

from conftest import SCENARIOS

LLAMA = SCENARIOS / "llama3-70b-64-h100.toml"
GPT3 = SCENARIOS / "gpt3-175b-1024-a100.toml"


def _sample(sc, gpus, n, seed):
    space = Space(gpus=(gpus,))
    ctx = Context.build(sc, gpus)
    sks = skeletons(sc, space)
    cols = {sk: evaluate(ctx, sk, space) for sk in sks}
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        sk = rng.choice(sks)
        if cols[sk]["n"]:
            out.append((ctx, layout_dict(cols[sk], rng.randrange(cols[sk]["n"]), sc)))
    return out


@pytest.mark.parametrize("path,gpus,n", [(LLAMA, 64, 25), (GPT3, 64, 25)])
def test_vectorised_equals_analytical_engine(path, gpus, n):
    """~50 layouts sampled over the whole grid (every schedule, ZeRO stage, recompute mode,
    SP, feasible or not): step time, breakdown, memory and MFU equal analytical.run's."""
    sc = load_scenario(path)
    for ctx, rec in _sample(sc, gpus, n, seed=gpus):
        pred = analytical.run(scenario_of(sc, rec), ctx.device, ctx.cluster)
        got = {"step": rec["step_time_s"], "mem": rec["memory_bytes"], "mfu": rec["mfu"],
               "bubble": rec["bubble_s"], "comm": rec["exposed_comm_s"], "compute": rec["compute_s"],
               "opt": rec["optimizer_s"], "act": rec["mem_activations"]}
        want = {"step": pred.step_time_s, "mem": pred.memory_bytes["total"], "mfu": pred.mfu,
                "bubble": pred.breakdown_s["bubble"], "comm": pred.breakdown_s["exposed_comm"],
                "compute": pred.breakdown_s["compute"], "opt": pred.breakdown_s["optimizer"],
                "act": pred.memory_bytes["activations"]}
        for k in got:
            assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), (k, rec["parallel"],
                                                                           rec["training"])


FRAMEWORK_KNOBS = ["parallel.pipeline_p2p=sequential", "parallel.scatter_gather=false",
                   "parallel.zero_grad_reduce=all_reduce", "training.overlap_grad_reduce=false"]


@pytest.mark.parametrize("path,gpus,n", [(GPT3, 64, 20), (LLAMA, 64, 10)])
def test_vectorised_equals_analytical_engine_with_framework_knobs(path, gpus, n):
    """Blocking pipeline sends, no scatter/gather, all-reduced ZeRO-1/2 gradients (the
    DeepSpeed pipeline engine's behaviour, parsim.validate.published) agree too."""
    sc = load_scenario(path, FRAMEWORK_KNOBS)
    assert sc.parallel.pipeline_p2p == "sequential" and not sc.parallel.scatter_gather
    for ctx, rec in _sample(sc, gpus, n, seed=gpus + 1):
        pred = analytical.run(scenario_of(sc, rec), ctx.device, ctx.cluster)
        assert rec["step_time_s"] == pytest.approx(pred.step_time_s, rel=1e-9), rec["parallel"]
        assert rec["exposed_comm_s"] == pytest.approx(pred.breakdown_s["exposed_comm"], rel=1e-9,
                                                      abs=1e-12)


def test_plan_ranks_fitting_layouts_by_step_time():
    sc = load_scenario(GPT3)
    res = plan(sc, Space(gpus=(1024,), tp=(8,), pp=(8, 16)), top=10, retime=0)
    lay = res["layouts"]
    assert len(lay) == 10 and [r["rank"] for r in lay] == list(range(1, 11))
    steps = [r["step_time_s"] for r in lay]
    assert steps == sorted(steps)
    assert all(r["memory_bytes"] <= 80 * 2**30 for r in lay)
    assert res["infeasible"]["count"] > 0 and res["evaluated"] > res["infeasible"]["count"]
    assert sum(res["infeasible"]["by_largest_part"].values()) == res["infeasible"]["count"]
    # the scenario's own layout (tp8 pp16, full recompute) is the reference of the explanation
    assert res["reference"]["parallel"]["pp"] == 16
    assert "faster per step" in res["explanation"] or "already the fastest" in res["explanation"]


def test_cost_objective_orders_by_gpu_hours():
    sc = load_scenario(LLAMA, ["cluster.price_per_gpu_hour=2.5"])
    res = plan(sc, Space(gpus=(32, 64), tp=(8,)), objective="cost", top=5, retime=0)
    hours = [r["gpu_hours_per_step"] for r in res["layouts"]]
    assert hours == sorted(hours)
    r = res["layouts"][0]
    assert r["gpu_hours_per_step"] == pytest.approx(r["step_time_s"] * r["gpus"] / 3600)
    assert r["cost_per_step"] == pytest.approx(2.5 * r["gpu_hours_per_step"])


def test_pareto_frontier_over_cluster_sizes():
    sc = load_scenario(LLAMA)
    res = plan(sc, Space(gpus=(16, 32, 64), tp=(8,)), retime=0)
    gpus = [p["gpus"] for p in res["pareto"]]
    assert gpus == [16, 32, 64]
    assert res["pareto"][0]["frontier"]
    # a point is on the frontier iff it is faster than every smaller cluster
    best = float("inf")
    for p in res["pareto"]:
        assert p["frontier"] == (p["step_time_s"] < best)
        best = min(best, p["step_time_s"])
    assert pareto([]) == []


def test_des_retimes_the_best():
    sc = load_scenario(LLAMA)
    res = plan(sc, Space(gpus=(64,), tp=(8,), pp=(1,)), top=3, retime=1, retime_budget_s=120)
    top = res["layouts"][0]
    assert res["retime"]["engine"] == "des" and res["retime"]["count"] >= 1
    # no contention in a TP-only node layout: the DES agrees with the closed form
    assert top["des_step_time_s"] == pytest.approx(top["step_time_s"], rel=0.01)


def test_parse_gpus():
    assert parse_gpus("256:4096") == (256, 512, 1024, 2048, 4096)
    assert parse_gpus("8:32:8") == (8, 16, 24, 32)
    assert parse_gpus("64,16") == (16, 64)
    with pytest.raises(ParsimError, match="--gpus"):
        parse_gpus("lots")


def test_plan_rejects_non_transformers_and_impossible_sizes():
    with pytest.raises(ScenarioError, match="model.kind"):
        plan(load_scenario(SCENARIOS / "mlp-dp-allreduce.toml"), Space(gpus=(4,)))
    with pytest.raises(ScenarioError, match="gpus_per_node"):
        plan(load_scenario(LLAMA), Space(gpus=(12,)))


def test_cli_json(run_cli):
    code, out, _ = run_cli("plan", LLAMA, "--tp", "8", "--top", "3", "--retime", "0", "--json",
                           "--quiet", "--workers", "1")
    assert code == 0
    doc = json.loads(out)
    assert {"layouts", "evaluated", "infeasible", "seconds"} <= doc.keys()
    assert len(doc["layouts"]) == 3
    first = doc["layouts"][0]
    assert {"parallel", "training", "step_time_s", "mfu", "memory_bytes"} <= first.keys()
    assert first["parallel"]["tp"] == 8 and first["parallel"]["dp"] * 8 * first["parallel"]["pp"] == 64
    assert np.isfinite(first["step_time_s"]) and 0 < first["mfu"] < 1


def test_cli_table_and_errors(run_cli):
    code, out, _ = run_cli("plan", LLAMA, "--tp", "4,8", "--retime", "0", "--quiet")
    assert code == 0
    assert "do not fit in memory" in out and "step" in out and "MFU" in out and "best:" in out
    code, _, err = run_cli("plan", LLAMA, "--gpus", "x")
    assert code == 2 and "--gpus" in err
