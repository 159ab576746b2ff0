"""The prepared single-GPU check (parsim.validate.gpu_step, benchmarks/gpu_device_check.sh):
its scenarios predict sensibly, a CPU dry run goes end to end, and GPU calibration's
attention rows turn into the profile's attn_eff."""
from __future__ import annotations

import argparse
import json

import pytest

from parsim.calibrate import compute
from parsim.calibrate.profile import load_profile
from parsim.calibrate.toml_write import write_atomic
from parsim.validate import gpu_step


def test_every_gpu_size_predicts_and_grows_with_the_model():
    times = [gpu_step.predict_s(s, "h100-sxm-80gb", None) for s in gpu_step.GPU_SIZES]
    per_token = [t / (gpu_step.SIZES[s][3] * gpu_step.SIZES[s][4])
                 for t, s in zip(times, gpu_step.GPU_SIZES)]
    assert all(a < b for a, b in zip(per_token, per_token[1:]))
    # 2.7B on one H100: 6·N·tokens FLOPs at no more than the bf16 peak
    layers, hidden, heads, seq, mb = gpu_step.SIZES["gpt-2.7b"]
    assert times[-1] > 6 * 2.6e9 * seq * mb / 989e12


def test_scenario_matches_the_torch_model():
    torch = pytest.importorskip("torch")
    layers, hidden, heads, seq, _ = gpu_step.SIZES["tiny"]
    model = gpu_step.build_model(torch, layers, hidden, heads, seq)
    n = sum(p.numel() for p in model.parameters())
    # 12h² + 13h per layer, token and position embeddings (the head is tied), final norm
    assert n == layers * (12 * hidden**2 + 13 * hidden) + (gpu_step.VOCAB + seq) * hidden + 2 * hidden
    from parsim.models.transformer import total_params
    from parsim.scenario import scenario_from_dict
    sc_obj = scenario_from_dict(gpu_step.scenario("tiny", "h100-sxm-80gb", None), file=None)
    assert total_params(sc_obj.model) == n                       # parsim counts the same model
    sc = gpu_step.scenario("tiny", "h100-sxm-80gb", None)
    assert sc["training"]["attention_kernel"] == "fa2" and sc["model"]["tied_embeddings"]


def test_cpu_dry_run_end_to_end(tmp_path, capsys):
    pytest.importorskip("torch")
    args = argparse.Namespace(device="cpu", sizes="tiny", profile=None, out=str(tmp_path),
                              steps=2, warmup=1)
    out = gpu_step.run(args)
    data = json.loads((tmp_path / "gpu_step.json").read_text())
    assert data["rows"] == json.loads(json.dumps(out["rows"]))
    row = data["rows"][0]
    assert row["name"] == "tiny" and row["measured_s"] > 0 and row["predicted_s"] > 0
    assert row["error_pct"] == pytest.approx(100 * (row["predicted_s"] / row["measured_s"] - 1))
    assert "median |error|" in capsys.readouterr().out


def test_attention_rows_become_attn_eff(tmp_path):
    gemm = compute.Bench("gemm bf16", "gemm", lambda: None, 2e12,
                         {"m": 8192, "n": 8192, "k": 8192, "dtype": "bf16"})
    attn = compute.Bench("attention", "attention", lambda: None, 4e11,
                         {"batch": 1, "heads": 32, "seq": 8192, "head_dim": 128,
                          "dtype": "bf16", "causal": True})
    mem = compute.Bench("copy", "mem", lambda: None, 2e9, {"bytes": 1e9})
    launch = compute.Bench("launch", "launch", lambda: None, 1.0)
    gemm.samples, attn.samples, mem.samples, launch.samples = [0.004], [0.001], [0.001], [5e-6]
    out = compute.summarize([gemm, attn, mem, launch])
    assert out["device"]["peak_flops"]["bf16"] == pytest.approx(5e14)
    assert out["device"]["attn_eff"] == pytest.approx(4e14 / 5e14)
    path = tmp_path / "p.toml"
    write_atomic(str(path), {"meta": {}, "device": {"base": "gpu", **out["device"]},
                             "gemm": out["gemm"], "memory": out["memory"],
                             "attention": out["attention"]})
    prof = load_profile(path)
    assert prof.attention[0]["seq"] == 8192 and prof.device["attn_eff"] == pytest.approx(0.8)
    from parsim.hardware import get_device
    dev = get_device("h100-sxm-80gb").with_overrides(prof.device, file=str(path))
    assert dev.attn_eff == pytest.approx(0.8)
    assert dev.attn_kernels["fa2"] == pytest.approx(0.8)         # torch SDPA runs FA2: measured
    # a kernel the profile did not measure keeps its FLOP rate against the measured peak
    assert dev.attn_kernels["fa3"] == pytest.approx(min(1.0, 0.75 * 989 / 500))

