"""Every shipped scenario predicts in text and JSON; the analytical engine's schedule rules."""
from __future__ import annotations

import json

import pytest

from parsim.engines import analytical
from parsim.predict import cluster_for, device_for
from parsim.scenario import load_scenario, scenario_from_dict

from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

STEP_KEYS = {"step_time_s", "samples_per_s", "tokens_per_s", "model_tflops_per_gpu",
             "hardware_tflops_per_gpu", "mfu", "hfu", "breakdown_s", "comm_s", "memory_bytes",
             "fits_in_memory", "engine"}


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_scenario_predicts_text_and_json(path, run_cli):
    code, out, err = run_cli("predict", path, "--engine", "analytical")
    assert code == 0, err
    code, js, err = run_cli("predict", path, "--json", "--engine", "analytical")
    assert code == 0, err
    data = json.loads(js)
    if "busbw_GBps" in data:
        assert "busbw" in out and data["time_s"] > 0
        assert {"time_s", "algbw_GBps", "busbw_GBps", "algorithm"} <= data.keys()
        return
    assert STEP_KEYS <= data.keys()
    assert {"compute", "bubble", "exposed_comm", "optimizer"} <= data["breakdown_s"].keys()
    assert {"dp", "tp", "pp", "ps"} <= data["comm_s"].keys()
    assert {"params", "grads", "optimizer", "activations", "total", "capacity"} \
        <= data["memory_bytes"].keys()
    assert data["step_time_s"] > 0 and 0 < data["mfu"] < 1
    assert sum(data["breakdown_s"].values()) == pytest.approx(data["step_time_s"], rel=1e-9)
    assert "step time" in out and ("fits" in out or "DOES NOT FIT" in out)


def test_set_overrides_like_the_file(run_cli):
    path = SCENARIOS / "gpt3-175b-1024-a100.toml"
    _, base, _ = run_cli("predict", path, "--json", "--engine", "analytical")
    code, changed, err = run_cli("predict", path, "--json", "--engine", "analytical",
                                 "--set", "parallel.tp=4", "--set", "parallel.dp=16")
    assert code == 0, err
    assert json.loads(changed)["step_time_s"] != json.loads(base)["step_time_s"]
    assert json.loads(changed)["layout"]["tp"] == 4


def _ring_pipeline(pp, m, schedule="1f1b", vpp=1, layers=48):
    raw = {"model": {"kind": "transformer", "layers": layers, "hidden": 1024, "heads": 16,
                     "seq_len": 1024, "vocab": 32000, "position": "rope"},
           "training": {"global_batch": m, "micro_batch": 1},
           "parallel": {"pp": pp, "vpp": vpp, "schedule": schedule},
           "cluster": {"topology": "ring", "gpus": pp, "gpu": "a100-80gb",
                       "link_bandwidth": "1000 GB/s", "link_latency": 0}}
    return scenario_from_dict(raw)


@pytest.mark.parametrize("schedule,vpp", [("gpipe", 1), ("1f1b", 1), ("interleaved", 2),
                                          ("interleaved", 3)])
def test_pipeline_bubble_fraction(schedule, vpp):
    """Narayanan et al. 2021 sec. 2.2: bubble (p-1)/m, interleaved (p-1)/(v·m). Stages are
    made equal by giving the embedding/logit work no weight relative to 48 layers: we check
    the formula on the stage times the engine computed."""
    p, m = 4, 8
    sc = _ring_pipeline(p, m, schedule, vpp)
    costs = analytical.step_costs(sc, device_for(sc), cluster_for(sc))
    st = analytical.stage_times(sc, costs)
    T = [c + tp for c, tp, _, _ in st]
    pipe = analytical.pipeline_time_s(sc, T)
    equal = [max(T)] * p
    assert analytical.pipeline_time_s(sc, equal) == pytest.approx(max(T) * (m + (p - 1) / vpp))
    assert pipe - m * max(T) >= 0


def test_tp1_has_no_tp_communication():
    """Calculon-style sanity: TP = 1 means no TP traffic."""
    sc = load_scenario(SCENARIOS / "gpt3-175b-1024-a100.toml",
                       ["parallel.tp=1", "parallel.dp=64", "training.global_batch=1536"])
    pred = analytical.run(sc, device_for(sc), cluster_for(sc))
    assert pred.comm_s["tp"] == 0


def test_trace_and_timeline_from_the_cli(run_cli, tmp_path):
    """Chrome trace-event JSON (one complete slice per op) and a Gantt PNG."""
    trace, png = tmp_path / "t.json", tmp_path / "t.png"
    code, out, err = run_cli("predict", SCENARIOS / "mlp-model-parallel.toml",
                             "--trace", trace, "--timeline", png)
    assert code == 0, err
    events = json.loads(trace.read_text())["traceEvents"]
    slices = [e for e in events if e.get("ph") == "X"]
    assert slices and all({"name", "ts", "dur", "pid", "tid"} <= e.keys() for e in slices)
    assert any(e["name"].startswith("fwd") for e in slices)
    assert any(e["name"].startswith("bwd") for e in slices)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trace_needs_the_des(run_cli, tmp_path):
    code, _, err = run_cli("predict", SCENARIOS / "mlp-model-parallel.toml", "--engine",
                           "analytical", "--trace", tmp_path / "t.json")
    assert code == 2 and "--trace" in err
