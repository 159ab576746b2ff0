"""parsim validate --local: the cost model of real local jobs, and a small real run."""
from __future__ import annotations

import argparse
import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from parsim.calibrate import session
from parsim.calibrate.profile import Collective, Profile, load_profile
from parsim.validate import local as LR
from parsim.validate import local_model as L

ROOT = Path(__file__).resolve().parent.parent
DEV_PROFILE = ROOT / "profiles" / "cpu-dev2core.toml"


def _profile(*, cores=2, foreign=0.0, ranks=(2,)) -> Profile:
    """A synthetic profile: 50 GFLOP/s for every GEMM, 10 GB/s, all_reduce t = 1 ms + S/1 GB/s."""
    sizes = (1024.0, 2.0**20, 2.0**26)
    colls = tuple(Collective("gloo", "all_reduce", n, sizes, tuple(1e-3 * n + s / 1e9 for s in sizes),
                             1e-3, 1e9, extra={"cpu_s": [0.5e-3 + s / 2e9 for s in sizes]})
                  for n in ranks)
    colls += (Collective("gloo", "send_recv", 2, sizes, tuple(0.5e-3 + s / 2e9 for s in sizes),
                         0.5e-3, 2e9, extra={"cpu_s": [0.2e-3 + s / 4e9 for s in sizes]}),)
    gemm = tuple({"m": n, "n": n, "k": n, "dtype": "fp32", "time_s": 1.0, "flops_per_s": 50e9}
                 for n in (64, 512, 2048))
    return Profile(path="synthetic", meta={"cores": cores, "noise": {"foreign_cores_max": foreign}},
                   device={"mem_bw_Bps": 10e9, "launch_s": 0.0}, gemm=gemm, collectives=colls,
                   memory=({"op": "add", "bytes_per_s": 5e9},))


# --- the model ------------------------------------------------------------------------------

def test_gemm_flops_are_three_times_forward():
    sizes, b = (512, 256, 10), 32
    flops = sum(2 * m * n * k for m, n, k in L.gemm_shapes(sizes, b))
    assert flops == 3 * 2 * b * (512 * 256 + 256 * 10)
    prof = _profile()                       # 50 GFLOP/s, 2 clean cores: one thread gets 25
    assert L.thread_share(prof) == 0.5
    assert L.gemm_time_s(prof, sizes, b, 0.5) == pytest.approx(flops / 25e9)
    # elementwise at the memory bandwidth, no launch cost in this profile
    assert L.compute_s(prof, sizes, b, 0.5) == pytest.approx(
        flops / 25e9 + L.elementwise_bytes(sizes, b) / 10e9)


def test_thread_share_reads_the_calibration_noise():
    assert L.thread_share(_profile(foreign=0.1)) == 0.5
    assert L.thread_share(_profile(foreign=1.5)) == 1.0      # others held a core: 1 thread ran
    assert L.model_share(_profile()) == 0.5                  # no single-thread table: fallback


def _with_single_thread(prof, rate=20e9, spread=0.25):
    import dataclasses
    rows = tuple({"m": n, "n": n, "k": n, "dtype": "fp32", "time_s": 1.0, "flops_per_s": rate,
                  "spread": spread, "threads": 1} for n in (64, 512, 2048))
    return dataclasses.replace(prof, gemm=prof.gemm + rows)


def test_single_thread_table_is_used_as_measured():
    prof = _with_single_thread(_profile())
    assert prof.gemm_flops_per_s(512, 512, 512) == 50e9                 # all-threads rows
    assert prof.gemm_flops_per_s(512, 512, 512, threads=1) == 20e9
    assert L.model_share(prof) is None
    sizes, b = (512, 256, 10), 32
    flops = sum(2 * m * n * k for m, n, k in L.gemm_shapes(sizes, b))
    assert L.gemm_time_s(prof, sizes, b) == pytest.approx(flops / 20e9)  # not 50e9 x share
    dev = load_profile(DEV_PROFILE)
    assert L.has_single_thread_table(dev) and L.model_share(dev) is None
    assert {r.get("threads") for r in dev.gemm} == {1, 2}
    # the one-thread rate is about half the two-thread one on the 2-core machine
    r1, r2 = dev.gemm_flops_per_s(512, 512, 512, threads=1), dev.gemm_flops_per_s(512, 512, 512)
    assert 0.3 < r1 / r2 < 0.8


def test_sync_wait_is_the_expected_maximum_of_the_ranks():
    assert L.sync_wait_s(0.1, 1, 0.05) == 0.0
    assert L.sync_wait_s(0.1, 2, 0.05) == pytest.approx(0.1 * 0.05 / math.sqrt(math.pi), rel=1e-3)
    assert L.sync_wait_s(0.1, 3, 0.05) == pytest.approx(0.1 * 0.05 * 1.5 / math.sqrt(math.pi), rel=1e-3)
    # the noise: the co-run spread if measured, else the single-thread GEMM rows' spread
    prof = _with_single_thread(_profile(), spread=0.25)
    assert L.compute_noise(prof) == pytest.approx(0.25 / 2.5631)
    import dataclasses
    corun = dataclasses.replace(prof, meta=dict(prof.meta, corun={"spread": 0.1, "slowdown": 1.2}))
    assert L.compute_noise(corun) == pytest.approx(0.1 / 2.5631)
    assert L.corun_slowdown(corun, 1) == 1.0 and L.corun_slowdown(corun, 2) == 1.2
    assert L.corun_slowdown(prof, 2) == 1.0
    # data parallel: the wait is part of the step
    t, parts = L.predict(L.default_jobs()[1], corun)
    assert parts["wait_s"] == pytest.approx(L.sync_wait_s(parts["compute_s"], 2, 0.1 / 2.5631))
    assert t == pytest.approx(sum(parts.values()))


def test_all_reduce_uses_the_ring_rule_for_unmeasured_groups():
    prof = _profile(ranks=(2,))
    S = 8e6
    t2 = prof.collective_time_s("all_reduce", 2, 2 * S / 3)
    assert L.all_reduce_s(prof, 3, S) == pytest.approx(2 * t2)
    assert L.all_reduce_s(prof, 2, S) == pytest.approx(prof.collective_time_s("all_reduce", 2, S))
    assert L.all_reduce_s(prof, 1, S) == 0.0
    measured3 = _profile(ranks=(2, 3))
    assert L.all_reduce_s(measured3, 3, S) == pytest.approx(measured3.collective_time_s("all_reduce", 3, S))
    # CPU per rank follows the same rule
    S3 = 1.5 * 2**20                                         # 2S/3 is a measured size
    assert L.comm_cpu_s(prof, "all_reduce", 3, S3) == pytest.approx(2 * (0.5e-3 + 2**20 / 2e9))


def test_contention():
    assert L.contention(1, 2) == 1.0 and L.contention(2, 2) == 1.0
    assert L.contention(3, 2) == 1.5
    assert L.contention(2, 2, foreign=1.0) == 2.0
    assert L.contention(1, 2, foreign=5.0) == 5.0                # floor: 10 % of the cores


def test_pipeline_schedule_has_the_gpipe_bubble():
    f, b, m = 1.0, 2.0, 4
    # stage 1 does F+B per micro-batch; equal stages, free sends: (m + p - 1)(f + b)
    assert L.pipeline_step_s(f, b, f + b, 0.0, 0.0, m) == pytest.approx((m + 1) * (f + b))
    # each send on the critical path: one activation before stage 1 starts, one gradient back
    assert L.pipeline_step_s(f, b, f + b, 0.5, 0.5, m) == pytest.approx((m + 1) * (f + b) + 1.0)
    assert L.pipeline_step_s(f, b, f + b, 0.0, 0.0, 1, update0=0.3) == pytest.approx(2 * (f + b) + 0.3)


def test_parameter_server_serialises_messages():
    assert L.ps_step_s(10.0, 1.0, 2.0, 0.5, 1) == pytest.approx(13.5)
    # no compute: every message goes through the one server in turn
    assert L.ps_step_s(0.0, 1.0, 2.0, 0.5, 3) == pytest.approx(3 * 1.0 + 0.5 + 3 * 2.0)
    # worker 2 gets its parameters one pull after worker 1, so worker 1's push overlaps
    # worker 2's compute: compute + one push + update + both pulls
    assert L.ps_step_s(10.0, 1.0, 1.0, 0.5, 2) == pytest.approx(10 + 1 + 0.5 + 2 * 1)


def test_robust_profile_drops_the_disturbed_gemm_row():
    import dataclasses
    dev = load_profile(DEV_PROFILE)
    assert L.robust_profile(dev)[1] == []                       # a quiet calibration
    rows = [dict(r) for r in dev.gemm]
    bad = next(r for r in rows if (r["m"], r["dtype"], r.get("threads")) == (128, "fp32", 2))
    bad["flops_per_s"] = 0.42e9                                 # as another process disturbed it
    prof, dropped = L.robust_profile(dataclasses.replace(dev, gemm=tuple(rows)))
    assert [(r["m"], r["dtype"], r["threads"]) for r in dropped] == [(128, "fp32", 2)]
    assert len(prof.gemm) == len(dev.gemm) - 1
    assert prof.gemm_flops_per_s(128, 128, 128) > 10e9


def test_predictions_of_the_default_jobs_on_the_dev_profile():
    prof, _ = L.robust_profile(load_profile(DEV_PROFILE))
    pred = {j.name: L.predict(j, prof) for j in L.default_jobs()}
    for name, (t, parts) in pred.items():
        if name.startswith("dp"):
            assert t == pytest.approx(sum(parts.values()))
    ms = {k: v[0] * 1e3 for k, v in pred.items()}
    # golden values (ms) of the model on the committed profile
    assert ms["dp1-1024"] == pytest.approx(65.875, rel=2e-3)
    assert ms["dp2-1024"] == pytest.approx(80.540, rel=2e-3)
    assert ms["dp3-1024"] == pytest.approx(127.336, rel=2e-3)
    assert ms["dp1-512"] < ms["dp2-512"] < ms["dp3-512"]
    # three processes on two cores: compute stretches by 3/2
    assert pred["dp3-1024"][1]["compute_s"] == pytest.approx(1.5 * pred["dp2-1024"][1]["compute_s"])
    assert pred["ps2w-1024"][0] > pred["dp2-1024"][0]             # two messages each way, in turn
    # foreign load: another program on one core doubles what two processes take
    loaded, _ = L.predict(L.default_jobs()[4], prof, foreign_cores=1.0)
    assert loaded > 1.8 * ms["dp2-1024"] / 1e3


# --- a real run: calibrate, then validate, two gloo processes ---------------------------------

def test_calibrate_then_validate_end_to_end_with_two_processes(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "cpu.toml"
    session.calibrate(session.Options(output=str(out), grid="tiny", quiet=True, ranks=2, repeats=2,
                                      backend="gloo", ops=("all_reduce", "send_recv")))
    prof = load_profile(out)
    assert {(c.op, c.ranks) for c in prof.collectives} == {("all_reduce", 2), ("send_recv", 2)}

    jobs = L.default_jobs(quick=True)
    assert {(j.kind, j.world) for j in jobs} == {("dp", 1), ("dp", 2), ("pp", 2)}
    args = argparse.Namespace(local=str(tmp_path), profile=str(out), quick=True, json=True,
                              plot=str(tmp_path / "v.png"), quiet=True)
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert LR.run(args) == 0                                  # what `parsim validate --local` runs
    data = json.loads(buf.getvalue())
    assert data["profile"] == str(out) and data["cores"] >= 1 and "loadavg_before" in data
    assert data["foreign_cores_before"] is None or data["foreign_cores_before"] >= 0.0
    clean, _ = L.robust_profile(prof)
    assert [r["name"] for r in data["rows"]] == [j.name for j in jobs]
    for row, job in zip(data["rows"], jobs):
        assert row["processes"] == job.world and len(row["samples_s"]) == job.steps
        assert row["measured_s"] == pytest.approx(float(np.median(row["samples_s"])))
        assert 1e-5 < row["measured_s"] < 5.0
        raw = L.predict(job, clean, row["foreign_cores"])[0]
        assert row["predicted_profile_s"] == pytest.approx(raw)
        assert 0.2 < row["speed_factor"] < 5.0                    # the probe ran and was read
        assert row["predicted_s"] == pytest.approx(raw * row["speed_factor"])
        assert row["predicted_quiet_s"] == pytest.approx(L.predict(job, clean)[0] * row["speed_factor"])
        assert row["error_pct"] == pytest.approx(
            100 * (row["predicted_s"] - row["measured_s"]) / row["measured_s"])
        assert row["spread_pct"] >= 0 and math.isfinite(row["error_pct"])
        assert row["runs"] == 1 and row["run_errors_pct"] == pytest.approx([row["error_pct"]])
    assert data["rows"][1]["phases_measured"]["comm_s"] > 0       # a real all-reduce ran
    errs = [abs(r["error_pct"]) for r in data["rows"]]
    assert data["median_abs_pct_error"] == pytest.approx(float(np.median(errs)))
    assert data["max_abs_pct_error"] == pytest.approx(max(errs))
    assert (tmp_path / "v.png").stat().st_size > 1000
    assert json.loads((tmp_path / "local_runs.json").read_text())["rows"] == data["rows"]


def test_busy_machine_warning_comes_from_other_programs_not_the_load_average():
    rep = LR.LocalReport(profile="p.toml", cores=2, loadavg_before=2.4, loadavg_after=2.5,
                         foreign_cores_before=0.05)
    assert rep.warnings() == []          # a decaying load average from an earlier run
    rep.foreign_cores_before = 0.9
    assert "other programs used 0.90 of 2 cores" in rep.warnings()[0]


def _run(ratio, disturbed=False, drift=0.0):
    # measured 10 ms, raw prediction 10 ms x ratio, speed factor 1
    return LR.Run({}, 1.0, drift, disturbed, 0.010, 0.010 * ratio)


def test_a_row_reports_the_median_undisturbed_run():
    runs = [_run(1.30), _run(0.95), _run(1.05)]
    assert LR.median_run(runs) is runs[2]                          # 0.95 < 1.05 < 1.30
    runs.append(_run(0.50, disturbed=True))                        # disturbed runs do not count
    assert LR.median_run(runs) is runs[2]
    even = [_run(1.10, drift=0.08), _run(0.90, drift=0.02), _run(1.40), _run(0.60)]
    assert LR.median_run(even) is even[1]                          # middle pair: steadier speed
    hit = [_run(1.3, True), _run(1.1, True), _run(0.7, True)]      # all disturbed: median of all
    assert LR.median_run(hit) is hit[1]
    assert runs[0].ratio == pytest.approx(1.30)


def test_speed_factor_is_the_profile_rate_over_the_probed_rate():
    prof = _profile()
    rate = prof.gemm_flops_per_s(512, 512, 512, "fp32", threads=1)
    if rate is None:   # the synthetic profile has no one-thread table: no scaling
        assert LR.speed_factor(prof, {"before": {"512x512x512": 1e9},
                                      "after": {"512x512x512": 1e9}}) == (1.0, 0.0)
    import dataclasses
    one = dataclasses.replace(prof, gemm=prof.gemm + tuple(
        {"m": m, "n": m, "k": m, "dtype": "fp32", "threads": 1, "flops_per_s": 40e9}
        for m in (256, 512, 1024)))
    probe = {"before": {"512x512x512": 20e9}, "after": {"512x512x512": 20e9 * 1.21}}
    factor, drift = LR.speed_factor(one, probe)
    assert factor == pytest.approx(40e9 / (20e9 * 1.1))          # geometric mean of the two
    assert drift == pytest.approx(0.21)
    probe["middle"] = {"512x512x512": 20e9 / 1.1}                # a slow middle widens drift
    factor, drift = LR.speed_factor(one, probe)
    assert factor == pytest.approx(40e9 / (20e9 * (1.21 / 1.1) ** (1 / 3)))
    assert drift == pytest.approx(1.21 * 1.1 - 1)
    assert LR.speed_factor(one, None) == (1.0, 0.0)


def test_validate_cli_reaches_the_local_hook(run_cli, tmp_path):
    code, out, err = run_cli("validate", "--local", tmp_path / "missing")
    assert code == 2 and "missing" in err and "directory does not exist" in err
