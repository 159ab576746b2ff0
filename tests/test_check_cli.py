"""``parsim check``: the scenarios' layouts compute what one device computes, through the
DES executor; wrong updates and broken schedules are caught; big models are refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from parsim.numerics import comm as C
from parsim.numerics.des_executor import DesExecutor

from conftest import SCENARIOS

MLP_SCENARIOS = ["mlp-dp-allreduce", "mlp-ps", "mlp-model-parallel"]
KEYS = {"exact", "max_rel_diff", "tolerance", "loss_serial", "loss_parallel", "verdict",
        "per_tensor", "comm", "expected_exact"}


@pytest.mark.parametrize("name", MLP_SCENARIOS)
def test_mlp_scenarios_are_exact_through_the_des(run_cli, name):
    code, out, err = run_cli("check", SCENARIOS / f"{name}.toml", "--steps", 3, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert KEYS <= set(r)
    assert r["exact"] is True and r["max_rel_diff"] <= 1e-12 and r["tolerance"] == 1e-12
    assert len(r["loss_serial"]) == len(r["loss_parallel"]) == 3
    assert "computes what one device computes" in r["verdict"]
    assert r["config"]["global_batch"] == 256 and r["config"]["dtype"] == "float64"
    comm = r["comm"]
    assert comm["seconds_per_step"] > 0
    if name == "mlp-model-parallel":                 # pp sends are timed in the DES
        assert comm["collectives_per_step"] == 0 and comm["sends_per_step"] > 0
        assert set(comm["by_schedule"]) == {"p2p n=2"}


def test_dp_comm_time_is_the_ring_closed_form(run_cli):
    """4 ranks on a switch: each ring step crosses two 10 Gb/s hops (25 us each); the
    4 flows of a round use distinct links, so one all-reduce of S bytes takes
    2(n-1)·2α + 2(n-1)/n·S/B."""
    code, out, _ = run_cli("check", SCENARIOS / "mlp-dp-allreduce.toml", "--steps", 1, "--json")
    r = json.loads(out)
    S = (1000 * 500 + 500 + 500 * 100 + 100) * 8
    want = 2 * 3 * 2 * 25e-6 + 2 * 3 / 4 * S / (10e9 / 8)
    assert r["comm"]["seconds_per_step"] == pytest.approx(want, rel=1e-9)


def test_readable_report(run_cli):
    code, out, _ = run_cli("check", SCENARIOS / "mlp-ps.toml", "--steps", 2)
    assert code == 0
    for text in ("max relative difference per tensor", "loss serial", "loss parallel",
                 "simulated communication", "per step", "ps_push", "result: EXACT",
                 "dp4 (sync PS)"):
        assert text in out


def test_sum_params_is_wrong_but_expected(run_cli):
    code, out, _ = run_cli("check", SCENARIOS / "mlp-dp-allreduce.toml", "--steps", 3,
                           "--json", "--set", 'training.sync_rule="sum_params"')
    assert code == 0                       # the seed article's rule: expected to differ
    r = json.loads(out)
    assert r["exact"] is False and r["expected_exact"] is False
    lp = r["loss_parallel"]
    assert lp[-1] is None or not lp[-1] < lp[0]          # not decreasing (or overflowed)
    assert "averag" in r["verdict"] and "(N+1)" in r["verdict"]
    code, out, _ = run_cli("check", SCENARIOS / "mlp-dp-allreduce.toml", "--steps", 1,
                           "--set", 'training.sync_rule="sum_params"')
    assert code == 0 and "as expected" in out


def test_async_ps_with_staleness_differs_as_expected(run_cli):
    code, out, _ = run_cli("check", SCENARIOS / "mlp-ps.toml", "--steps", 3, "--json",
                           "--set", 'parallel.ps_mode="async"', "--set", "parallel.staleness=2")
    r = json.loads(out)
    assert code == 0 and r["exact"] is False and r["expected_exact"] is False
    assert "staleness 2 is a different algorithm" in r["verdict"]


def test_dropped_step_in_the_des_is_caught(run_cli, monkeypatch):
    """A ring all-reduce missing its first message, run through the DES executor."""
    original = DesExecutor.__call__

    def dropping(self, bufs, sched, on_step=None):
        if sched.name == "ring" and sched.steps:
            sched = C.Schedule(sched.name, sched.n_ranks, sched.n_chunks, sched.steps[1:])
        return original(self, bufs, sched, on_step)

    monkeypatch.setattr(DesExecutor, "__call__", dropping)
    code, out, _ = run_cli("check", SCENARIOS / "mlp-dp-allreduce.toml", "--steps", 2, "--json")
    assert code == 1
    r = json.loads(out)
    assert r["exact"] is False and r["expected_exact"] is True
    assert r["max_rel_diff"] is None or r["max_rel_diff"] > 1e-6
    assert "does NOT compute" in r["verdict"] and "after step 0" in r["verdict"]


def test_reference_executor_gives_the_same_arrays(run_cli):
    a = json.loads(run_cli("check", SCENARIOS / "mlp-ps.toml", "--steps", 1, "--json")[1])
    b = json.loads(run_cli("check", SCENARIOS / "mlp-ps.toml", "--steps", 1, "--json",
                           "--executor", "reference")[1])
    assert a["loss_parallel"] == b["loss_parallel"] and a["per_tensor"] == b["per_tensor"]
    assert "comm" not in b
    assert set(a["comm"]["by_schedule"]) == {"ps_push n=6", "ps_pull n=6"}


def test_big_model_is_refused_in_one_line(run_cli):
    code, out, err = run_cli("check", SCENARIOS / "gpt3-175b-1024-a100.toml")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "small models" in lines[0] and "5,000,000 parameters" in lines[0]
    assert lines[0].startswith("parsim: error: ") and "gpt3-175b" in lines[0]


def test_collective_scenario_is_refused(run_cli):
    code, _, err = run_cli("check", SCENARIOS / "allreduce-ring-8.toml")
    assert code == 2 and "trains a model" in err and len(err.strip().splitlines()) == 1


def test_small_transformer_scenario(run_cli, tmp_path):
    f = tmp_path / "lm.toml"
    f.write_text("""
[model]
kind = "transformer"
layers = 2
hidden = 16
heads = 4
seq_len = 8
vocab = 16
[training]
global_batch = 8
micro_batch = 2
optimizer = "adam"
lr = 0.01
[parallel]
dp = 2
tp = 2
pp = 2
zero = 1
[cluster]
topology = "switch"
gpus = 8
link_bandwidth = "100 GB/s"
link_latency = "2 us"
""")
    code, out, err = run_cli("check", f, "--steps", 2, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["exact"] and r["config"]["model"] == "lm" and r["comm"]["seconds_per_step"] > 0
    assert np.isfinite(r["max_rel_diff"])


def test_pipeline_sends_are_timed_in_the_des(run_cli):
    """3 stages of a 1000-500-500-100 MLP on a switch, 8 micro-batches of 32: each carries
    two forward activations and two backward gradients of 32×500 float64 (128 kB) between
    neighbouring stages, each crossing two 10 Gb/s hops of 25 us: 2α + S/B per send."""
    code, out, err = run_cli("check", SCENARIOS / "mlp-model-parallel.toml", "--steps", 1,
                             "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["exact"] is True
    comm = r["comm"]
    assert comm["sends_per_step"] == 8 * 4
    S = 32 * 500 * 8
    want = 8 * 4 * (2 * 25e-6 + S / (10e9 / 8))
    assert comm["seconds_per_step"] == pytest.approx(want, rel=1e-9)
    assert comm["by_schedule"]["p2p n=2"]["bytes_per_step"] == 8 * 4 * S
