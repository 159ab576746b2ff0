"""The lowered Program in the DES agrees with the closed form where nothing contends."""
from __future__ import annotations

import pytest

from parsim.engines import analytical, des_predict
from parsim.predict import cluster_for, device_for
from parsim.scenario import scenario_from_dict


def _scenario(pp=1, dp=1, m=8, schedule="1f1b", vpp=1, **training):
    layers = 24
    raw = {"model": {"kind": "transformer", "layers": layers, "hidden": 1024, "heads": 16,
                     "seq_len": 1024, "vocab": 32000, "position": "rope"},
           "training": {"global_batch": m * dp, "micro_batch": 1, **training},
           "parallel": {"pp": pp, "dp": dp, "vpp": vpp, "schedule": schedule},
           "cluster": {"topology": "switch", "gpus": pp * dp, "gpu": "a100-80gb",
                       "link_bandwidth": "1000 GB/s", "link_latency": 0}}
    return scenario_from_dict(raw)


def _both(sc):
    dev, cl = device_for(sc), cluster_for(sc)
    return analytical.run(sc, dev, cl), des_predict.predict(sc, dev, cl)


@pytest.mark.parametrize("schedule,pp,vpp,m", [("gpipe", 4, 1, 8), ("1f1b", 4, 1, 8),
                                              ("1f1b", 2, 1, 5), ("interleaved", 4, 2, 8),
                                              ("interleaved", 2, 3, 4)])
def test_pipeline_des_matches_closed_form(schedule, pp, vpp, m):
    """Bubble (p-1)/m for GPipe and 1F1B, (p-1)/(v·m) interleaved (Narayanan et al. 2021)."""
    a, d = _both(_scenario(pp=pp, m=m, schedule=schedule, vpp=vpp))
    assert d.step_time_s == pytest.approx(a.step_time_s, rel=0.01)
    assert d.breakdown_s["bubble"] == pytest.approx(a.breakdown_s["bubble"], rel=0.02, abs=1e-6)


def test_data_parallel_des_matches_closed_form_with_overlap():
    sc = scenario_from_dict({
        "model": {"preset": "gpt3-1.3b"},
        "training": {"global_batch": 8, "micro_batch": 1},
        "parallel": {"dp": 8},
        "cluster": {"topology": "switch", "gpus": 8, "gpu": "a100-80gb",
                    "link_bandwidth": "10 GB/s", "link_latency": "5 us"}})
    a, d = _both(sc)
    assert d.step_time_s == pytest.approx(a.step_time_s, rel=0.01)
    assert d.comm_s["dp"] == pytest.approx(a.comm_s["dp"], rel=0.02)


def test_overlap_hides_gradient_sync_behind_backward():
    """With overlap only what outlasts the backward pass is exposed; without, all of it."""
    base = {"model": {"preset": "gpt3-1.3b"}, "parallel": {"dp": 8},
            "cluster": {"topology": "switch", "gpus": 8, "gpu": "a100-80gb",
                        "link_bandwidth": "200 GB/s", "link_latency": "5 us"}}
    on = scenario_from_dict({**base, "training": {"global_batch": 8}})
    off = scenario_from_dict({**base, "training": {"global_batch": 8,
                                                   "overlap_grad_reduce": False}})
    _, d_on = _both(on)
    _, d_off = _both(off)
    assert d_on.comm_s["dp"] < 0.5 * d_off.comm_s["dp"]
    assert d_off.step_time_s - d_on.step_time_s == pytest.approx(
        d_off.comm_s["dp"] - d_on.comm_s["dp"], rel=0.01)
