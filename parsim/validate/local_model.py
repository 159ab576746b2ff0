"""The cost model of ``parsim validate --local``'s jobs: what each real local run should take,
from a calibrated profile alone (it never looks at a measurement).

The prediction (:func:`predict`) never looks at the measurement: it prices what the job
does from the profile (``profiles/cpu-dev2core.toml`` unless ``--profile``):

- GEMMs (:func:`gemm_time_s`): every matmul of forward (2·b·in·out FLOPs per layer) and
  backward (twice that: dX and dW) at the profile's *single-thread* rate for its shape (the
  ``threads = 1`` GEMM table the calibration measures, operands out of the private cache;
  the workers run single-threaded BLAS). Profiles without that table: the all-threads rate
  times :func:`thread_share`;
- elementwise work (:func:`elementwise_bytes`): bias add, ReLU and its mask, the bias
  gradient, softmax cross-entropy — bytes moved at the profile's ``ufunc_alloc`` rate (an
  allocating ufunc on an activation-sized array, :func:`activation_bw`); packing gradients
  and the SGD update at its memory bandwidth; plus ``launch_s`` per numpy call
  (:func:`op_count`);
- processes computing at once (:func:`corun_slowdown`): compute stretches by the profile's
  measured ``meta.corun.slowdown`` (a numpy MLP step beside cores - 1 others / alone);
- synchronisation (:func:`sync_wait_s`): a data-parallel all-reduce starts when the slowest
  of the n ranks arrives — E[max of n] of the compute, with the relative standard deviation
  the profile measured (:func:`compute_noise`: the co-run step spread, else the GEMM rows');
- communication: ``Profile.collective_time_s`` (gloo, measured) — all-reduce of the
  gradient bytes (groups the profile did not measure come from its 2-rank curve by the ring
  algorithm, :func:`all_reduce_s`), send/recv for push, pull and pipeline activations;
- schedules: the server handles the workers' messages one after another
  (:func:`ps_step_s`); the pipeline's stages follow their op order with the sends between
  them (:func:`pipeline_step_s`, bubble included);
- shared cores (:func:`contention`): with more busy processes than cores (or cores taken
  by other programs, measured per run), compute, the update and the all-reduce (every rank
  works through the whole ring) stretch by processes/free cores; a message costs at least
  the CPU time gloo spends on it (``cpu_s`` in the profile), and with no idle core that
  CPU time comes out of the pipeline stages' compute;
- the profile's GEMM rows more than 10x below their dtype's median are dropped first
  (:func:`robust_profile`: a calibration point another process disturbed).

Worker processes get OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1 in their
environment before Python (hence numpy) starts: one BLAS thread per process, so three
processes on two cores share them instead of running six threads.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ScenarioError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_PROFILE = os.path.join(ROOT, "profiles", "cpu-dev2core.toml")
F32 = 4                                   # bytes per element: every job runs in float32


# ---- jobs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One real run: ``kind`` "dp", "ps" or "pp"; ``batch`` rows per process (dp, ps
    workers) or per step (pp, split into ``micro`` micro-batches); ``world`` processes
    (ps: one server + world-1 workers)."""

    name: str
    kind: str
    sizes: tuple[int, ...]
    batch: int
    world: int
    micro: int = 1
    steps: int = 10
    warmup: int = 3
    lr: float = 1e-3

    def to_json(self) -> dict:
        return asdict(self)


def default_jobs(quick: bool = False) -> list[Job]:
    """The validation set. Full: DP 1/2/3 processes at two sizes, PS (2 workers), PP 2 stages
    × 4 micro-batches; steps of ~10-100 ms. Quick (tests): tiny MLPs, 2 processes at most."""
    if quick:
        kw = dict(steps=4, warmup=1)
        small = (64, 128, 128, 10)
        return [Job("dp1-quick", "dp", small, 32, 1, **kw),
                Job("dp2-quick", "dp", small, 32, 2, **kw),
                Job("pp2-quick", "pp", (64, 128, 128, 128, 10), 32, 2, micro=2, **kw)]
    small, large = (512, 512, 512, 10), (1024, 1024, 1024, 10)
    return [Job("dp1-512", "dp", small, 256, 1), Job("dp2-512", "dp", small, 256, 2),
            Job("dp3-512", "dp", small, 256, 3),
            Job("dp1-1024", "dp", large, 256, 1), Job("dp2-1024", "dp", large, 256, 2),
            Job("dp3-1024", "dp", large, 256, 3),
            Job("ps2w-1024", "ps", large, 256, 3),
            Job("pp2-1024-m4", "pp", (1024, 1024, 1024, 1024, 10), 256, 2, micro=4)]


# ---- the model ---------------------------------------------------------------------------

def robust_profile(profile, *, factor: float = 10.0):
    """(profile, dropped rows): GEMM rows more than ``factor`` x slower than the median of
    their dtype (and thread count) are dropped — a measurement another process disturbed
    (e.g. 128³ at 0.4 GFLOP/s between 64³ and 256³ at 46), which would drag every
    interpolated rate."""
    import dataclasses

    def group(r):
        return r["dtype"], r.get("threads")
    keep, dropped = [], []
    for r in profile.gemm:
        med = float(np.median([q["flops_per_s"] for q in profile.gemm if group(q) == group(r)]))
        (dropped if r["flops_per_s"] * factor < med else keep).append(r)
    return (dataclasses.replace(profile, gemm=tuple(keep)) if dropped else profile), dropped


def thread_share(profile) -> float:
    """Fraction of the profile's all-threads GEMM rate one single-threaded process gets —
    the fallback for profiles without a single-thread table (``threads = 1`` rows).

    The profile times numpy GEMMs with all BLAS threads (``meta.cores``). The threads that
    really ran are the cores minus those other processes held during calibration
    (``meta.noise.foreign_cores_max``, rounded), at least 1; one thread gets 1/that."""
    cores = int(profile.meta.get("cores") or profile.device.get("sm_count") or 1)
    foreign = float(profile.meta.get("noise", {}).get("foreign_cores_max", 0.0))
    return 1.0 / max(1, min(cores, cores - round(foreign)))


def has_single_thread_table(profile) -> bool:
    return bool(profile.gemm_rows("fp32", threads=1))


def model_share(profile) -> float | None:
    """The ``share`` :func:`predict` uses: None (one-thread rates measured: use them as they
    are) when the profile has the single-thread table, else :func:`thread_share`."""
    return None if has_single_thread_table(profile) else thread_share(profile)


def one_thread_rate(profile, m: int, n: int, k: int, share: float | None = None) -> float:
    """FLOP/s of an m×k·k×n fp32 GEMM on one BLAS thread: the profile's single-thread table
    (``share`` None), or its all-threads rate times ``share``."""
    if share is None:
        rate = profile.gemm_flops_per_s(m, n, k, "fp32", threads=1)
        if rate is not None:
            return rate
        share = thread_share(profile)
    return profile.gemm_flops_per_s(m, n, k, "fp32") * share


# expected maximum of n independent standard normal samples (n = 1..8)
_E_MAX_NORMAL = (0.0, 0.5642, 0.8463, 1.0294, 1.1630, 1.2672, 1.3522, 1.4236)
_P90_P10 = 2.5631          # (p90 - p10) of a standard normal


def compute_noise(profile) -> float:
    """Relative standard deviation of a training step's compute on this machine, from the
    profile: the spread ((p90 - p10) / median) of a one-thread numpy MLP step beside other
    busy processes (``meta.corun.spread``, :func:`parsim.calibrate.compute.measure_corun`),
    else the median spread of the single-thread GEMM rows (each sample ~20 ms of GEMMs, about
    a step), turned into a standard deviation for a normal distribution (/ 2.563)."""
    corun = profile.meta.get("corun") or {}
    if "spread" in corun:
        return float(corun["spread"]) / _P90_P10
    rows = profile.gemm_rows("fp32", threads=1) or profile.gemm_rows("fp32")
    spreads = [float(r["spread"]) for r in rows if "spread" in r]
    return float(np.median(spreads)) / _P90_P10 if spreads else 0.0


def sync_wait_s(t_compute: float, n: int, rel_sigma: float) -> float:
    """Expected wait at a collective for the slowest of ``n`` processes whose compute takes
    ``t_compute`` with relative standard deviation ``rel_sigma`` (independent, normal): the
    step runs at E[max of n] = mean + σ·e_n (e_2 = 1/√π, e_3 = 3/(2√π), ...), so the all-
    reduce starts σ·e_n after a typical rank's compute ends."""
    if n < 2:
        return 0.0
    e = _E_MAX_NORMAL[min(n, len(_E_MAX_NORMAL)) - 1]
    return t_compute * rel_sigma * e


def gemm_shapes(sizes, b: int):
    """(m, n, k, count) of every matmul in one forward + backward of the MLP on b rows:
    forward x·W (b×in by in×out), backward dX = dY·Wᵀ (b×out by out×in; not for layer 0,
    whose input gradient the MLP still computes — it is counted) and dW = Xᵀ·dY (in×b by
    b×out)."""
    out = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        out += [(b, d_out, d_in), (b, d_in, d_out), (d_in, d_out, b)]
    return out


def gemm_time_s(profile, sizes, b: int, share: float | None = None) -> float:
    """Seconds of the GEMMs of one forward + backward on one thread: Σ 2·m·n·k / rate, the
    rate from :func:`one_thread_rate` (the single-thread table when ``share`` is None)."""
    return sum(2.0 * m * n * k / one_thread_rate(profile, m, n, k, share)
               for m, n, k in gemm_shapes(sizes, b))


def elementwise_bytes(sizes, b: int, *, loss: bool = True) -> float:
    """Bytes the non-GEMM numpy ops of one forward + backward move (float32, bool mask 1 B).

    Per layer: bias add (read y, write) 8 B/elem of the b×out output; ReLU 8; backward mask
    ``y > 0`` 5 and ``dy * mask`` 9; bias gradient (sum over rows) 4. Loss on b×C logits:
    max, subtract, exp, sum, log, subtract, exp (~40 B/elem) and its gradient (~16)."""
    total = 0.0
    last = len(sizes) - 2
    for i, d_out in enumerate(sizes[1:]):
        e = b * d_out
        total += 8 * e + 4 * e                      # bias add, bias gradient
        if i < last or not loss:
            total += 8 * e + 14 * e                 # ReLU forward, ReLU backward
    if loss:
        total += 56 * b * sizes[-1]
    return total


def op_count(sizes, *, loss: bool = True) -> int:
    """numpy calls of one forward + backward (each pays ``launch_s``)."""
    layers = len(sizes) - 1
    return layers * 9 + (12 if loss else 0)


def n_params(sizes) -> int:
    return sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))


def elementwise_bw(profile) -> float:
    """Bandwidth of numpy's elementwise ops and of the update: the profile's memory
    bandwidth (``device.mem_bw_Bps``, a large copy; one thread, like numpy's ufuncs)."""
    return float(profile.device["mem_bw_Bps"])


def activation_bw(profile) -> float:
    """Bandwidth of the elementwise ops of forward/backward (bias add, ReLU, masks: fresh
    output arrays of activation size): the profile's ``ufunc_alloc`` row (an allocating
    ``np.maximum`` on 1 MiB) when it has one, else :func:`elementwise_bw`."""
    for row in profile.memory:
        if row.get("op") == "ufunc_alloc":
            return float(row["bytes_per_s"])
    return elementwise_bw(profile)


def compute_s(profile, sizes, b: int, share: float | None = None, *, loss: bool = True) -> float:
    """One forward + backward on b rows by one single-threaded process (no contention)."""
    bw = activation_bw(profile)
    launch = float(profile.device.get("launch_s", 0.0))
    return (gemm_time_s(profile, sizes, b, share) + elementwise_bytes(sizes, b, loss=loss) / bw
            + op_count(sizes, loss=loss) * launch)


def update_s(profile, params: int, *, packed: bool, extra_bytes_per_param: float = 0.0,
             tensors: int = 1) -> float:
    """SGD θ -= lr·g, memory-bound: lr·g (read g, write tmp: 8 B) then θ -= tmp (12 B);
    ``packed`` adds packing the gradients into one buffer (8 B) and dividing by the world
    size (8 B) — what data parallelism does around its all-reduce."""
    per = 20.0 + (16.0 if packed else 0.0) + extra_bytes_per_param
    return params * per / elementwise_bw(profile) \
        + 2 * tensors * float(profile.device.get("launch_s", 0.0))


def _interp_loglog(sizes, values, s: float) -> float:
    """Log-log interpolation in a measured table; flat below it, linear in size above."""
    if s <= sizes[0]:
        return float(values[0])
    if s >= sizes[-1]:
        return float(values[-1]) * s / sizes[-1]
    return float(np.exp(np.interp(math.log(s), np.log(sizes), np.log(values))))


def _curve(profile, op: str, ranks: int):
    for c in profile.collectives:
        if c.op == op and c.ranks == ranks:
            return c
    return None


def comm_cpu_s(profile, op: str, ranks: int, size_bytes: float) -> float:
    """CPU seconds one rank spends in ``op`` (the profile's ``cpu_s``), 0 if not measured;
    groups above 2 from the 2-rank curve by the ring rule (see :func:`all_reduce_s`)."""
    c = _curve(profile, op, ranks)
    scale = 1
    if c is None and op == "all_reduce" and ranks > 2:
        c, scale, size_bytes = _curve(profile, op, 2), ranks - 1, 2.0 * size_bytes / ranks
    if c is None or "cpu_s" not in c.extra or size_bytes <= 0:
        return 0.0
    return scale * _interp_loglog(c.size_bytes, c.extra["cpu_s"], size_bytes)


def all_reduce_s(profile, ranks: int, size_bytes: float) -> float:
    """Wall time of an all-reduce of ``size_bytes`` over ``ranks`` processes.

    The measured curve for that group size if the profile has it; otherwise the ring
    algorithm (Patarasuk & Yuan 2009): 2(n-1) steps of S/n bytes, i.e.
    t_n(S) = (n-1)·t_2(2S/n), from the measured 2-rank curve."""
    if ranks < 2 or size_bytes <= 0:
        return 0.0
    t = profile.collective_time_s("all_reduce", ranks, size_bytes)
    if t is None:
        t2 = profile.collective_time_s("all_reduce", 2, 2.0 * size_bytes / ranks)
        if t2 is None:
            raise ScenarioError("the profile has no all_reduce curve", file=profile.path)
        t = (ranks - 1) * t2
    return t


def send_recv_s(profile, size_bytes: float, stretch: float = 1.0) -> float:
    """One message of ``size_bytes`` from one process to another (measured, one way); at
    least the CPU both ends burn (``cpu_s``) times ``stretch``, the contention of the two
    busy processes (:func:`contention`)."""
    t = profile.collective_time_s("send_recv", 2, size_bytes)
    if t is None:
        raise ScenarioError("the profile has no send_recv curve", file=profile.path)
    return max(t, comm_cpu_s(profile, "send_recv", 2, size_bytes) * stretch)


def corun_slowdown(profile, busy: int) -> float:
    """Stretch of single-threaded compute when ``busy`` (>= 2) processes compute at once:
    they share the memory system, last-level cache and kernel. The profile's
    ``meta.corun.slowdown`` (a one-thread numpy MLP step beside cores - 1 others doing the
    same / alone, measured by the calibration; at least 1), 1 without it or with one busy
    process."""
    if busy < 2:
        return 1.0
    return max(1.0, float((profile.meta.get("corun") or {}).get("slowdown", 1.0)))


def contention(busy: int, cores: int, foreign: float = 0.0) -> float:
    """Stretch of CPU-bound work when ``busy`` single-threaded processes share ``cores``
    with other programs that hold ``foreign`` cores (0 on a quiet machine): each process
    gets min(1, (cores - foreign) / busy) of a core. The cores left are floored at 10 %."""
    free = max(cores - foreign, 0.1 * cores)
    return max(1.0, busy / free)


def ps_step_s(t_compute: float, t_push: float, t_pull: float, t_update: float,
              workers: int, steps: int = 8) -> float:
    """Steady-state step of a synchronous parameter server with one server process.

    Worker w: compute, push (the server receives workers 1..W in turn, one message at a
    time), wait for the pull; server: after the last push, update, then send the parameters
    to workers 1..W in turn; a worker starts its next step when its pull arrives. Simulated
    for ``steps`` steps; the period of the last one is returned."""
    ready = [0.0] * workers                     # when each worker's parameters arrived
    ends = []
    for _ in range(steps):
        srv = ends[-1] if ends else 0.0
        for w in range(workers):                # pushes, in order, through the server
            srv = max(srv, ready[w] + t_compute) + t_push
        srv += t_update
        for w in range(workers):                # pulls, in order
            srv += t_pull
            ready[w] = srv
        ends.append(srv)
    return ends[-1] - ends[-2] if len(ends) > 1 else ends[-1]


def pipeline_step_s(fwd0: float, bwd0: float, fb1: float, t_act: float, t_grad: float,
                    micro: int, update0: float = 0.0, update1: float = 0.0) -> float:
    """One step of the two-stage pipeline as the workers run it (GPipe on stage 0: all m
    forwards, then all m backwards; stage 1: forward+loss+backward per micro-batch).

    F0_i starts after F0_{i-1}; FB1_i after FB1_{i-1} and F0_i's activation arrived
    (+ t_act); B0_i after the previous op on stage 0 and FB1_i's gradient arrived
    (+ t_grad). The step ends when stage 0 has updated (stage 1 finishes first). With
    equal stages this is the GPipe (m + p - 1)·(f + b) form, bubble included."""
    t0, f_end = 0.0, []
    for _ in range(micro):
        t0 += fwd0
        f_end.append(t0)
    t1, fb_end = 0.0, []
    for i in range(micro):
        t1 = max(t1, f_end[i] + t_act) + fb1
        fb_end.append(t1)
    for i in range(micro):
        t0 = max(t0, fb_end[i] + t_grad) + bwd0
    return max(t0 + update0, t1 + update1)


def predict(job: Job, profile, foreign_cores: float = 0.0) -> tuple[float, dict]:
    """Predicted step time of ``job`` (seconds) and its parts, from the profile and the
    number of cores other programs hold (``foreign_cores``; 0: a quiet machine)."""
    share = model_share(profile)
    cores = int(profile.meta.get("cores") or profile.device.get("sm_count") or 1)
    sizes, P = job.sizes, n_params(job.sizes)
    grad_bytes = P * F32
    tensors = 2 * (len(sizes) - 1)
    if job.kind == "dp":
        slow = contention(job.world, cores, foreign_cores)
        comp = compute_s(profile, sizes, job.batch, share) * slow \
            * corun_slowdown(profile, min(job.world, cores))
        if job.world > 1:
            upd = update_s(profile, P, packed=True, tensors=1) * slow
            # every rank works through the whole ring (sends, receives, sums): the collective
            # is as CPU-bound as the compute and shares the cores the same way
            comm = max(all_reduce_s(profile, job.world, grad_bytes),
                       comm_cpu_s(profile, "all_reduce", job.world, grad_bytes)) * slow
        else:
            upd, comm = update_s(profile, P, packed=False, tensors=tensors), 0.0
        # the all-reduce starts when the slowest rank arrives (rank 0 waits for it)
        wait = sync_wait_s(comp, job.world, compute_noise(profile))
        parts = {"compute_s": comp, "wait_s": wait, "update_s": upd, "comm_s": comm}
        return comp + wait + upd + comm, parts
    if job.kind == "ps":
        W = job.world - 1
        slow = contention(W, cores, foreign_cores)   # the server waits while workers compute
        comp = compute_s(profile, sizes, job.batch, share) * slow \
            * corun_slowdown(profile, min(W, cores)) \
            + P * 8 / elementwise_bw(profile)     # packing the gradients
        t_msg = send_recv_s(profile, grad_bytes, contention(2, cores, foreign_cores))
        # server: sum W buffers (12 B/param per extra buffer), divide (8 B), SGD (20 B)
        upd = update_s(profile, P, packed=False, extra_bytes_per_param=12 * (W - 1) + 8) \
            * contention(1, cores, foreign_cores)
        step = ps_step_s(comp, t_msg, t_msg, upd, W)
        return step, {"compute_s": comp, "update_s": upd, "comm_s": step - comp - upd}
    if job.kind == "pp":
        L = len(sizes) - 1
        cut = L // 2
        s0, s1 = sizes[:cut + 1], sizes[cut:]
        mb = job.batch // job.micro
        slow = contention(job.world, cores, foreign_cores) \
            * corun_slowdown(profile, min(job.world, cores))
        c0 = compute_s(profile, s0, mb, share, loss=False) * slow
        gemm_f0 = sum(2.0 * m * n * k / one_thread_rate(profile, m, n, k, share)
                      for m, n, k in gemm_shapes(s0, mb)[0::3]) * slow
        fwd0 = gemm_f0 + (c0 - gemm_f0) / 3          # elementwise: ~1/3 forward, 2/3 backward
        bwd0 = c0 - fwd0
        fb1 = compute_s(profile, s1, mb, share) * slow
        # gradients accumulate (grads += g: 12 B/param per micro-batch), zeroed once (4 B)
        p0, p1 = n_params(s0), n_params(s1)
        bw = elementwise_bw(profile)
        bwd0 += p0 * 12 / bw
        fb1 += p1 * 12 / bw
        upd0 = update_s(profile, p0, packed=False, extra_bytes_per_param=4, tensors=2 * cut) * slow
        upd1 = update_s(profile, p1, packed=False, extra_bytes_per_param=4,
                        tensors=2 * (L - cut)) * slow
        t_act = send_recv_s(profile, mb * sizes[cut] * F32, slow)
        if job.world >= cores - foreign_cores:
            # no idle core: gloo's CPU time for each message (sent or received, ``cpu_s``)
            # comes out of the stage's compute — 2 messages per micro-batch on each stage
            msg_cpu = comm_cpu_s(profile, "send_recv", 2, mb * sizes[cut] * F32) * slow
            fwd0, bwd0, fb1 = fwd0 + msg_cpu, bwd0 + msg_cpu, fb1 + 2 * msg_cpu
        step = pipeline_step_s(fwd0, bwd0, fb1, t_act, t_act, job.micro, upd0, upd1)
        ideal = job.micro * (fwd0 + bwd0) + upd0
        return step, {"compute_s": job.micro * (fwd0 + bwd0), "update_s": upd0,
                      "comm_bubble_s": step - ideal}
    raise ValueError(f"unknown job kind {job.kind!r}")


