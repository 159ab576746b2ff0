"""One worker process of ``parsim validate --local``: trains the numpy MLP for real.

Run as ``python -m parsim.validate.local_worker JOB.json RESULT.json`` by
:func:`parsim.validate.local.launch`, with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in
the environment (the variables torchrun sets) and OMP/OPENBLAS/MKL_NUM_THREADS=1 set
*before* Python starts, so numpy's BLAS runs one thread per process and N processes use N
cores instead of oversubscribing them. Communication is torch.distributed over gloo on
float32 tensors that share memory with the numpy buffers (``torch.from_numpy``, no copy).

Jobs (``job["kind"]``), all float32, SGD, seeded weights and one fixed batch per rank:

- ``dp``: every rank computes loss and gradients of its ``batch`` rows, packs the gradients
  into one flat buffer, all-reduces it (one gloo op; none with one process), divides by the
  world size and updates.
- ``ps``: rank 0 is the parameter server, ranks 1..W workers. A worker computes gradients and
  pushes them (``send``); the server receives worker 1, 2, ... in turn, averages, updates and
  sends the parameters back to each worker in turn (pull).
- ``pp``: two stages (rank 0: the first half of the layers, rank 1: the rest and the loss),
  ``micro`` micro-batches, GPipe order on stage 0 (all forwards, then all backwards), forward
  then backward per micro-batch on stage 1; activations and their gradients are sent with
  ``isend``/``recv``; gradients accumulate over micro-batches, then each stage updates.

Rank 0 records the wall time of every step (all ranks run in lockstep: the step ends in a
collective or a receive) and its phases (dp: compute, comm, update; ps server: push, update,
pull; pp stage 0: forwards, waits for gradients, backwards, update) and writes ``{"step_s": [...], "warmup": n}`` to RESULT.json. Before, halfway through and after the job
rank 0 times a few one-thread GEMMs alone (:func:`probe_rates`): how fast the machine was while the job
ran, against the profile's calibration.
"""
from __future__ import annotations

import json
import os
import sys
import time


def _flat_params(sizes, np, rng):
    """Parameters as views into one flat float32 buffer (so a whole-model send/recv or
    update is one op): (flat, {"W0": view, "b0": view, ...}, keys in order)."""
    from ..numerics.mlp import init_mlp
    init = init_mlp(sizes, rng, dtype=np.float32)
    keys = list(init)
    flat = np.concatenate([init[k].ravel() for k in keys]).astype(np.float32)
    views, off = {}, 0
    for k in keys:
        n = init[k].size
        views[k] = flat[off:off + n].reshape(init[k].shape)
        off += n
    return flat, views, keys


def _batch(job, rank, np, rows=None):
    rng = np.random.default_rng(1000 + rank)
    rows = rows or job["batch"]
    x = rng.standard_normal((rows, job["sizes"][0])).astype(np.float32)
    y = rng.integers(0, job["sizes"][-1], rows)
    return x, y


def _stage_fwd(params, layers, last, x, labels, mlp):
    """Forward of the layers ``layers`` (ReLU after every layer but the model's last)."""
    hs = [x]
    for i in layers:
        a = mlp.linear_fwd(hs[-1], params[f"W{i}"], params[f"b{i}"])
        hs.append(a if (last and i == layers[-1]) else mlp.relu_fwd(a))
    if last:
        loss, probs = mlp.xent_fwd(hs[-1], labels)
        return hs, probs
    return hs, None


def _stage_bwd(params, layers, last, hs, dy, grads, mlp):
    """Backward through ``layers``; accumulates into ``grads``; returns d(input)."""
    for j, i in reversed(list(enumerate(layers))):
        if not (last and i == layers[-1]):
            dy = mlp.relu_bwd(dy, hs[j + 1])
        dy, gW, gb = mlp.linear_bwd(dy, hs[j], params[f"W{i}"])
        grads[f"W{i}"] += gW
        grads[f"b{i}"] += gb
    return dy


def run_job(job, rank, world, dist, torch):
    import numpy as np
    from ..numerics import mlp
    from ..numerics.optim import SGD
    opt = SGD(job.get("lr", 1e-3))
    flat, params, keys = _flat_params(job["sizes"], np, np.random.default_rng(0))
    steps = job["warmup"] + job["steps"]
    times = []
    kind = job["kind"]
    phases = job.setdefault("_phases", [])
    monitor = _Monitor(job, rank, world, dist)
    if kind == "dp":
        x, y = _batch(job, rank, np)
        for _ in range(steps):
            monitor.tick(len(times))
            t0 = time.perf_counter()
            _, grads = mlp.loss_and_grads(params, x, y)
            t1 = t2 = time.perf_counter()
            if world > 1:
                g = np.concatenate([grads[k].ravel() for k in keys])
                t1 = time.perf_counter()
                dist.all_reduce(torch.from_numpy(g))
                t2 = time.perf_counter()
                g /= world
                opt.update(flat, g, {}, 1)
            else:
                for k in keys:
                    opt.update(params[k], grads[k], {}, 1)
            times.append(time.perf_counter() - t0)
            phases.append({"compute_s": t1 - t0, "comm_s": t2 - t1,
                           "update_s": times[-1] - (t2 - t0)})
    elif kind == "ps":
        workers = world - 1
        if rank == 0:
            bufs = [np.empty_like(flat) for _ in range(workers)]
            for _ in range(steps):
                monitor.tick(len(times))
                t0 = time.perf_counter()
                for w in range(workers):
                    dist.recv(torch.from_numpy(bufs[w]), src=w + 1)
                t1 = time.perf_counter()
                acc = bufs[0]
                for b in bufs[1:]:
                    acc += b
                acc /= workers
                opt.update(flat, acc, {}, 1)
                t2 = time.perf_counter()
                for w in range(workers):
                    dist.send(torch.from_numpy(flat), dst=w + 1)
                times.append(time.perf_counter() - t0)
                phases.append({"push_s": t1 - t0, "update_s": t2 - t1,
                               "pull_s": times[-1] - (t2 - t0)})
        else:
            x, y = _batch(job, rank, np)
            tflat = torch.from_numpy(flat)
            for i in range(steps):
                monitor.tick(i)
                _, grads = mlp.loss_and_grads(params, x, y)
                g = np.concatenate([grads[k].ravel() for k in keys])
                dist.send(torch.from_numpy(g), dst=0)
                dist.recv(tflat, src=0)
    elif kind == "pp":
        L = len(job["sizes"]) - 1
        cut = job.get("cut", L // 2)
        layers = list(range(cut)) if rank == 0 else list(range(cut, L))
        m = job["micro"]
        mb = job["batch"] // m
        x, y = _batch(job, 0, np)
        width = job["sizes"][cut]
        act = np.empty((mb, width), np.float32)
        grads = {f"{p}{i}": np.zeros_like(params[f"{p}{i}"]) for i in layers for p in "Wb"}
        for _ in range(steps):
            monitor.tick(len(times))
            t0 = time.perf_counter()
            for g in grads.values():
                g.fill(0.0)
            if rank == 0:
                caches, sends = [], []
                wait = 0.0
                for i in range(m):
                    hs, _ = _stage_fwd(params, layers, False, x[i * mb:(i + 1) * mb], None, mlp)
                    caches.append(hs)
                    sends.append(dist.isend(torch.from_numpy(np.ascontiguousarray(hs[-1])), dst=1))
                t_fwd = time.perf_counter()
                for i in range(m):
                    tw = time.perf_counter()
                    dist.recv(torch.from_numpy(act), src=1)
                    wait += time.perf_counter() - tw
                    _stage_bwd(params, layers, False, caches[i], act, grads, mlp)
                for s in sends:
                    s.wait()
                t_bwd = time.perf_counter()
            else:
                sends = []
                for i in range(m):
                    a = np.empty((mb, width), np.float32)
                    dist.recv(torch.from_numpy(a), src=0)
                    labels = y[i * mb:(i + 1) * mb]
                    hs, probs = _stage_fwd(params, layers, True, a, labels, mlp)
                    dy = mlp.xent_bwd(probs, labels, hs[-1].shape, scale=1.0 / m)
                    dx = _stage_bwd(params, layers, True, hs, dy, grads, mlp)
                    sends.append(dist.isend(torch.from_numpy(np.ascontiguousarray(dx)), dst=0))
                for s in sends:
                    s.wait()
            for k in grads:
                opt.update(params[k], grads[k], {}, 1)
            times.append(time.perf_counter() - t0)
            if rank == 0:     # stage 0: its forwards, waits for gradients, backwards, update
                phases.append({"forward_s": t_fwd - t0, "grad_wait_s": wait,
                               "backward_s": t_bwd - t_fwd - wait,
                               "update_s": times[-1] - (t_bwd - t0)})
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    job["_foreign_cores"] = monitor.stop()
    return times


class _Monitor:
    """Every rank calls :meth:`tick` at the top of each step. Halfway through the measured
    steps all ranks meet at a barrier while rank 0 probes the machine's speed
    (:func:`probe_rates`) alone: a probe beside ranks still computing would time the
    sharing of the cores, not the machine. On rank 0 it also counts the cores used by
    processes other than this job's workers during the measured steps
    (:class:`parsim.calibrate.noise.CpuMonitor`; pids from ``job["_pids_file"]``)."""

    def __init__(self, job, rank, world=1, dist=None):
        self.job, self.rank, self.world, self.dist = job, rank, world, dist
        self.on, self.mon = rank == 0 and job.get("_pids_file"), None
        self.probed = False

    def tick(self, done: int) -> None:
        if done == self.job["warmup"] + self.job["steps"] // 2 and not self.probed:
            self.probed = True     # halfway: the machine's speed in the middle of the run
            self.job["_probe_middle"] = _probe(self.rank, self.world, self.dist)
        if self.on and done == self.job["warmup"] and self.mon is None:
            from ..calibrate.noise import CpuMonitor
            try:
                with open(self.job["_pids_file"]) as f:
                    pids = [int(p) for p in f.read().split()]
            except (OSError, ValueError):
                return
            self.mon = CpuMonitor(pids)
            self.mon.start()

    def stop(self):
        return self.mon.stop() if self.mon is not None else None


# GEMMs of the profile's single-thread table (parsim.calibrate.compute.CPU_SHAPES_1T) that
# rank 0 times alone before and after the job: the machine's speed when the job ran
# (parsim.validate.local.speed_factor).
PROBE_SHAPES = ((512, 512, 512), (256, 1024, 1024), (1024, 1024, 256))
PROBE_MIN_S = 0.03


def probe_rates(np) -> dict:
    """{"m x n x k": FLOP/s} of one-thread fp32 GEMMs, each the median of >= 5 calls over
    >= ``PROBE_MIN_S`` seconds, timed as the calibration's one-thread table is (operands
    cycling out of the private cache: :func:`parsim.calibrate.compute.cold_gemm_call`)."""
    from ..calibrate.compute import cache_bytes, cold_gemm_call
    out = {}
    rng = np.random.default_rng(1)
    l2 = cache_bytes(2)
    for m, n, k in PROBE_SHAPES:
        a = rng.random((m, k), dtype=np.float32)
        b = rng.random((k, n), dtype=np.float32)
        call, _ = cold_gemm_call(a, b, np.empty((m, n), np.float32), l2)
        call()
        times, start = [], time.perf_counter()
        while len(times) < 5 or time.perf_counter() - start < PROBE_MIN_S:
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        out[f"{m}x{n}x{k}"] = 2.0 * m * n * k / float(np.median(times))
    return out


def _probe(rank, world, dist):
    """Rank 0 probes (:func:`probe_rates`) while the others wait between two barriers, so it
    runs alone; its rates on rank 0, None elsewhere."""
    import numpy as np
    if world > 1:
        dist.barrier()
    rates = probe_rates(np) if rank == 0 else None
    if world > 1:
        dist.barrier()
    return rates


def main(argv=None) -> int:
    job_path, result_path = (argv or sys.argv[1:])[:2]
    with open(job_path) as f:
        job = json.load(f)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    dist = torch = None
    if world > 1:
        import warnings
        warnings.filterwarnings("ignore", category=FutureWarning)
        import torch
        import torch.distributed as dist
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method="env://")
    try:
        before = _probe(rank, world, dist)
        times = run_job(job, rank, world, dist, torch)
        after = _probe(rank, world, dist)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        from ..atomic import write_text
        write_text(result_path, json.dumps({
            "step_s": times, "warmup": job["warmup"], "phases": job.get("_phases", []),
            "foreign_cores": job.get("_foreign_cores"),
            "probe": {"before": before, "middle": job.get("_probe_middle"), "after": after}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
