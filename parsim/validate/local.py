"""``parsim validate --local``: real distributed jobs on this machine against the cost model.

    parsim validate --local DIR [--json] [--plot out.png]     # DIR receives local_runs.json
    python -m parsim.validate.local [--profile P.toml] [--quick] [--json] [--plot out.png]

Each job (:func:`default_jobs`) trains the numpy MLP of :mod:`parsim.numerics.mlp` in real
processes (:mod:`.local_worker`) talking gloo over loopback: data parallel with an
all-reduce over 1..3 processes at two model sizes, a parameter server (one server process,
two workers, push/pull with send/recv) and a two-stage pipeline (activations and their
gradients sent between the processes, m micro-batches). The step time measured is the
median of ``steps`` steps after ``warmup`` steps; the spread is (p90 - p10) / median.

The prediction is :func:`parsim.validate.local_model.predict` (from the profile only), scaled
by :func:`speed_factor`: the machine's speed while the job ran, from one-thread GEMMs rank 0
times alone before, halfway through and after it (:func:`parsim.validate.local_worker.probe_rates`),
against the same GEMMs in the profile. On a shared virtual machine the same one-thread GEMM
moves by 30-70 % within minutes; without this, a prediction is compared with a machine the
profile never saw. ``predicted_profile_s`` is the unscaled figure.

Every job runs ``ROUNDS`` times, round by round through the whole set, and its row is its
median run (:func:`median_run`): the host also slows down in ways the probes miss, and
interleaving puts such a minute into one run of a job rather than into all of them, as the
calibration interleaves its rounds.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field, replace

import numpy as np

from ..atomic import write_text
# a run during which others held more cores is disturbed, as a calibration round is
from ..calibrate.noise import FOREIGN_CORES_MAX, foreign_cores, load_average, spread
from ..errors import ScenarioError
from .local_model import DEFAULT_PROFILE, Job, default_jobs, predict, robust_profile

# ---- running the jobs --------------------------------------------------------------------

class LocalRunFailed(RuntimeError):
    """Worker processes did not produce a result."""


def launch(job: Job, *, timeout_s: float = 300.0) -> dict:
    """Run ``job`` on ``job.world`` local processes of :mod:`.local_worker`; rank 0's result.

    The processes are started by :func:`parsim.calibrate.launch.run_processes`, as the
    calibration's communication workers are (the same torchrun variables, free port and
    loopback gloo, failure report), with one BLAS thread per process."""
    from ..calibrate.launch import _tail, gloo_env, run_processes
    with tempfile.TemporaryDirectory(prefix="parsim-validate-") as tmp:
        job_path, result_path = os.path.join(tmp, "job.json"), os.path.join(tmp, "result.json")
        pids_path = os.path.join(tmp, "pids")
        with open(job_path, "w") as f:
            json.dump(dict(job.to_json(), _pids_file=pids_path), f)
        cmd = [sys.executable, "-m", "parsim.validate.local_worker", job_path, result_path]
        env = gloo_env(job.world, OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")

        def write_pids(procs):   # the workers read it to tell their own CPU use from others'
            write_text(pids_path, " ".join(str(p.pid) for p in procs))
        codes, logs = run_processes(
            [(cmd, dict(env, RANK=str(r), LOCAL_RANK=str(r))) for r in range(job.world)], tmp,
            timeout_s=timeout_s, on_started=write_pids)
        if any(codes) or not os.path.exists(result_path):
            raise LocalRunFailed(f"{job.name}: workers failed (exit codes {codes}): {_tail(logs)}")
        with open(result_path) as f:
            return json.load(f)


@dataclass
class Row:
    name: str
    kind: str
    processes: int
    measured_s: float
    predicted_s: float
    error_pct: float
    spread_pct: float
    predicted_quiet_s: float = math.nan
    foreign_cores: float = 0.0
    parts: dict = field(default_factory=dict)
    samples_s: list = field(default_factory=list)
    phases: dict = field(default_factory=dict)
    speed_factor: float = 1.0
    predicted_profile_s: float = math.nan
    runs: int = 1
    disturbed: bool = False
    run_errors_pct: list = field(default_factory=list)
    speed_drift: float = 0.0
    run_disturbed: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "processes": self.processes,
                "measured_s": self.measured_s, "predicted_s": self.predicted_s,
                "error_pct": self.error_pct, "spread_pct": self.spread_pct,
                "predicted_quiet_s": self.predicted_quiet_s, "foreign_cores": self.foreign_cores,
                "speed_factor": self.speed_factor,
                "predicted_profile_s": self.predicted_profile_s, "runs": self.runs,
                "disturbed": self.disturbed, "run_errors_pct": self.run_errors_pct,
                "speed_drift": self.speed_drift, "run_disturbed": self.run_disturbed,
                "parts": self.parts, "phases_measured": self.phases, "samples_s": self.samples_s}


@dataclass
class LocalReport:
    profile: str
    cores: int
    rows: list = field(default_factory=list)
    loadavg_before: float | None = None
    loadavg_after: float | None = None
    dropped_gemm: list = field(default_factory=list)
    foreign_cores_before: float | None = None

    @property
    def abs_errors(self):
        return [abs(r.error_pct) for r in self.rows]

    @property
    def median_abs_pct_error(self) -> float:
        return float(np.median(self.abs_errors)) if self.rows else math.nan

    @property
    def max_abs_pct_error(self) -> float:
        return float(max(self.abs_errors)) if self.rows else math.nan

    def warnings(self) -> list[str]:
        # what other programs used in the second before the first job: the load averages
        # also count the jobs' own processes (3 on 2 cores leave them near 2.5), and decay
        # over minutes after a previous run
        out = []
        busy = self.foreign_cores_before
        if busy is not None and busy > 0.5:
            out.append(f"other programs used {busy:.2f} of {self.cores} cores just before the "
                       "jobs: they compete with them; measured times (and spreads) are inflated")
        hit = [r.name for r in self.rows if r.disturbed]
        if hit:
            out.append(f"other programs held > {FOREIGN_CORES_MAX} core in every run of: "
                       f"{', '.join(hit)}; their errors include it")
        if self.dropped_gemm:
            out.append("profile GEMM rows ignored as disturbed (>10x below their dtype's median): "
                       + ", ".join(self.dropped_gemm))
        return out

    def to_json(self) -> dict:
        return {"profile": self.profile, "cores": self.cores, "dropped_gemm": self.dropped_gemm,
                "loadavg_before": self.loadavg_before, "loadavg_after": self.loadavg_after,
                "foreign_cores_before": self.foreign_cores_before,
                "median_abs_pct_error": self.median_abs_pct_error,
                "max_abs_pct_error": self.max_abs_pct_error, "warnings": self.warnings(),
                "rows": [r.to_json() for r in self.rows]}


def speed_factor(profile, probe: dict | None) -> tuple[float, float]:
    """(factor, drift) of a run's probes (:func:`parsim.validate.local_worker.probe_rates`
    before, halfway through and after the job): ``factor`` = geometric mean over probes and
    shapes of the profile's one-thread rate / the rate measured (> 1: the machine ran slower
    than when it was calibrated; 1 when the profile has no one-thread table), ``drift`` =
    the fastest probe's rate / the slowest's - 1 (how much the speed moved while the job ran;
    0 without probes)."""
    sets = [probe.get(k) for k in ("before", "middle", "after")] if probe else []
    sets = [p for p in sets if p]
    shapes = [s for s in (sets[0] if sets else {}) if all(p.get(s) for p in sets)]
    if len(sets) < 2 or not shapes:
        return 1.0, 0.0
    level = [float(np.mean([math.log(p[s]) for s in shapes])) for p in sets]
    drift = math.exp(max(level) - min(level)) - 1.0
    refs = []
    for s in shapes:
        m, n, k = (int(v) for v in s.split("x"))
        refs.append(profile.gemm_flops_per_s(m, n, k, "fp32", threads=1))
    if any(r is None for r in refs):
        return 1.0, drift
    return math.exp(float(np.mean([math.log(r) for r in refs])) - float(np.mean(level))), drift


@dataclass
class Run:
    """One run of a job: what rank 0 reported, the machine's speed against the profile's
    (:func:`speed_factor`) and whether it was disturbed."""
    result: dict
    factor: float
    drift: float
    disturbed: bool
    measured_s: float          # median of the measured steps
    raw_s: float               # the profile's prediction for the cores others held

    @property
    def ratio(self) -> float:
        """predicted / measured, the prediction scaled to the speed this run found."""
        return self.raw_s * self.factor / self.measured_s


def run_once(job: Job, profile, *, timeout_s: float = 300.0) -> Run:
    """Launch ``job`` once and judge it: disturbed when other programs held more than
    ``FOREIGN_CORES_MAX`` cores over its measured steps (/proc accounting). A run across
    which the machine's own speed moved (``drift``, from the probes before, halfway and
    after) still counts: the probes scale its prediction, and the median over runs
    (:func:`median_run`) absorbs what they miss; on this VM half the runs move > 15 %."""
    result = launch(job, timeout_s=timeout_s)
    foreign = result["foreign_cores"] = float(result.get("foreign_cores") or 0.0)
    factor, drift = speed_factor(profile, result.get("probe"))
    raw, _ = predict(job, profile, foreign)
    return Run(result, factor, drift, foreign > FOREIGN_CORES_MAX,
               float(np.median(result["step_s"][result["warmup"]:])), raw)


def median_run(runs: list[Run]) -> Run:
    """The run a job's row reports: among the undisturbed runs (all, if every one was
    disturbed), the one whose predicted / measured ratio is the median; of an even count's
    middle two, the one whose speed moved least (its scaling is the most trustworthy).
    Runs are interleaved with the other jobs' (:func:`validate_local`), so a minute in which
    the host ran slow in a way no probe saw spoils one run of a job, not its row."""
    kept = [r for r in runs if not r.disturbed] or list(runs)
    kept.sort(key=lambda r: r.ratio)
    n = len(kept)
    if n % 2:
        return kept[n // 2]
    return min(kept[n // 2 - 1:n // 2 + 1], key=lambda r: r.drift)


def make_row(job: Job, profile, runs: list[Run]) -> Row:
    """The row of ``job`` from its runs (:func:`median_run`). The prediction is for the
    machine as that run found it: its foreign cores enter
    :func:`~parsim.validate.local_model.contention` (``predicted_quiet_s``: the same model on
    an idle machine) and its speed against the profile's scales the step
    (:func:`speed_factor`; ``predicted_profile_s`` unscaled)."""
    run = median_run(runs)
    result, factor = run.result, run.factor
    quiet, _ = predict(job, profile)
    raw, parts = predict(job, profile, result["foreign_cores"])
    predicted = raw * factor
    samples = result["step_s"][result["warmup"]:]
    med = run.measured_s
    kept = result.get("phases", [])[result["warmup"]:]
    phases = {k: float(np.median([p[k] for p in kept])) for k in (kept[0] if kept else {})}
    return Row(job.name, job.kind, job.world, med, predicted, 100.0 * (predicted - med) / med,
               100.0 * spread(samples), predicted_quiet_s=quiet * factor,
               foreign_cores=result["foreign_cores"], parts=parts,
               samples_s=[float(s) for s in samples], phases=phases, speed_factor=factor,
               predicted_profile_s=raw, runs=len(runs), disturbed=run.disturbed,
               run_errors_pct=[100.0 * (r.ratio - 1.0) for r in runs], speed_drift=run.drift,
               run_disturbed=[r.disturbed for r in runs])


MEASURE_S = 4.0                # measured steps of a job span about this long


def steps_for(job: Job, profile) -> int:
    """Measured steps so a job's steps span ~``MEASURE_S`` seconds by the profile's
    prediction (10 at least, 400 at most): on a shared VM a one-second sample is at the mercy
    of the host's state of that second (10-s medians of the same collective wander 57-89 ms)."""
    t, _ = predict(job, profile)
    return int(min(400, max(job.steps, round(MEASURE_S / max(t, 1e-4)))))


ROUNDS = 3                     # runs of every job, interleaved with the other jobs'
EXTRA_RUNS = 2                 # more runs of a job while every run of it was disturbed


def validate_local(profile_path: str | None = None, *, quick: bool = False, jobs=None,
                   progress=None, timeout_s: float = 300.0,
                   rounds: int | None = None) -> LocalReport:
    """Run every job (default :func:`default_jobs`) ``rounds`` times (default ``ROUNDS``, 1
    with ``quick``), round by round so that each job's runs lie minutes apart, then up to
    ``EXTRA_RUNS`` more of a job whose every run was disturbed (none with ``quick``); each
    row reports the job's median run (:func:`median_run`)."""
    rounds = rounds or (1 if quick else ROUNDS)
    from ..calibrate.profile import load_profile
    path = profile_path or DEFAULT_PROFILE
    profile, dropped = robust_profile(load_profile(path, file_key="--profile"))
    report = LocalReport(profile=path, cores=os.cpu_count() or 1, loadavg_before=load_average(),
                         dropped_gemm=[f"{r['m']:g}x{r['n']:g}x{r['k']:g} {r['dtype']} "
                                       f"{r['flops_per_s'] / 1e9:.2f} GFLOP/s" for r in dropped])
    report.foreign_cores_before = foreign_cores(0.2 if quick else 1.0)
    jobs = list(jobs if jobs is not None else default_jobs(quick))
    if not quick:
        jobs = [replace(job, steps=steps_for(job, profile)) for job in jobs]
    runs: dict[str, list[Run]] = {job.name: [] for job in jobs}
    for round_no in range(rounds):
        for job in jobs:
            if progress:
                progress(job, round_no, rounds)
            runs[job.name].append(run_once(job, profile, timeout_s=timeout_s))
    for job in jobs if not quick else ():
        while len(runs[job.name]) < rounds + EXTRA_RUNS and all(r.disturbed for r in runs[job.name]):
            if progress:
                progress(job, len(runs[job.name]), rounds)
            runs[job.name].append(run_once(job, profile, timeout_s=timeout_s))
    report.rows = [make_row(job, profile, runs[job.name]) for job in jobs]
    report.loadavg_after = load_average()
    return report


# ---- output ------------------------------------------------------------------------------

def format_table(report: LocalReport) -> str:
    w = max([len(r.name) for r in report.rows] + [3])
    lines = [f"profile {report.profile}; {report.cores} cores; other programs used "
             f"{_fmt_load(report.foreign_cores_before)} cores just before; load average "
             f"{_fmt_load(report.loadavg_before)} before, {_fmt_load(report.loadavg_after)} after",
             f"{'job':<{w}}  {'procs':>5}  {'measured':>10}  {'predicted':>10}  {'error':>8}  "
             f"{'spread':>7}  {'foreign':>7}  {'speed':>6}  {'profile pred':>12}  each run"]
    for r in report.rows:
        lines.append(f"{r.name:<{w}}  {r.processes:>5}  {r.measured_s * 1e3:>8.2f}ms  "
                     f"{r.predicted_s * 1e3:>8.2f}ms  {r.error_pct:>+7.1f}%  {r.spread_pct:>6.1f}%  "
                     f"{r.foreign_cores:>7.2f}  {r.speed_factor:>6.2f}  "
                     f"{r.predicted_profile_s * 1e3:>10.2f}ms  "
                     + " ".join(f"{e:+.0f}" + ("*" if hit else "")
                                for e, hit in zip(r.run_errors_pct, r.run_disturbed)))
    lines.append("speed: the profile's one-thread GEMM rate / the rate measured alone just "
                 "before, during and after the job (> 1: slower now); predicted = profile pred x "
                 "speed; each run: its error % (* disturbed), the row shows the median run")
    lines.append(f"median |error| {report.median_abs_pct_error:.1f} %, "
                 f"worst {report.max_abs_pct_error:.1f} % ({len(report.rows)} jobs)")
    lines.extend(f"warning: {w_}" for w_ in report.warnings())
    return "\n".join(lines)


def _fmt_load(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def plot(report: LocalReport, path: str) -> None:
    """Predicted against measured step time (ms, log axes) with y = x; written atomically."""
    from ..report.plots import finish_parity
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 6))
    for kind in sorted({r.kind for r in report.rows}):
        rows = [r for r in report.rows if r.kind == kind]
        ax.errorbar([r.measured_s * 1e3 for r in rows], [r.predicted_s * 1e3 for r in rows],
                    xerr=[r.measured_s * r.spread_pct / 200 * 1e3 for r in rows],
                    fmt="o", ms=5, label=kind)
        for r in rows:
            ax.annotate(r.name, (r.measured_s * 1e3, r.predicted_s * 1e3), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    finish_parity(fig, ax, (v * 1e3 for r in report.rows for v in (r.measured_s, r.predicted_s)),
                  unit="ms", path=path,
                  title=f"local runs: median |err| {report.median_abs_pct_error:.1f} %, "
                        f"worst {report.max_abs_pct_error:.1f} %")


def add_arguments(parser) -> None:
    """Options of the local validation beyond ``parsim validate``'s own."""
    parser.add_argument("--profile", metavar="P.toml", help=f"profile (default {DEFAULT_PROFILE})")
    parser.add_argument("--quick", action="store_true", help="tiny jobs, few steps (tests)")


def run(args) -> int:
    """Entry from ``parsim validate --local DIR``: run, print, write DIR/local_runs.json."""
    quiet = getattr(args, "quiet", False) or getattr(args, "json", False)
    out_dir = getattr(args, "local", None)
    if isinstance(out_dir, str) and out_dir and not os.path.isdir(out_dir):
        raise ScenarioError("directory does not exist", file=out_dir, key="--local")

    def progress(job, run_no, rounds):
        if not quiet:
            which = (f"run {run_no + 1} of {rounds}" if run_no < rounds else
                     f"run {run_no + 1}: every run so far was disturbed")
            print(f"running {job.name} ({job.world} processes), {which}", file=sys.stderr,
                  flush=True)
    try:
        report = validate_local(getattr(args, "profile", None), quick=getattr(args, "quick", False),
                                progress=progress)
    except LocalRunFailed as err:
        raise ScenarioError(str(err), key="--local") from None
    if isinstance(out_dir, str) and out_dir:
        write_text(os.path.join(out_dir, "local_runs.json"), json.dumps(report.to_json(), indent=1))
    if getattr(args, "plot", None):
        plot(report, args.plot)
    print(json.dumps(report.to_json(), indent=1) if args.json else format_table(report))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m parsim.validate.local",
                                 description="real local runs against the cost model")
    add_arguments(ap)
    ap.add_argument("--local", metavar="DIR", default="", help="also write DIR/local_runs.json")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plot", metavar="PNG")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except ScenarioError as err:
        print(f"parsim: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
