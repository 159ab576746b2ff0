"""Communication microbenchmarks: collectives and point-to-point over torch.distributed or MPI.

Every rank runs :func:`run_benchmark` with a backend adapter (:class:`TorchComm` for gloo or
nccl, :class:`MpiComm` for mpi4py). For each group size g (the first g ranks), every
(op, size) pair is timed in rounds; a round visits all pairs in one seeded order, the same
on every rank. One sample: barrier, then ``inner`` back-to-back operations; the sample is
the slowest rank's mean time per operation (a collective ends when its last rank does).
Rank 0 watches foreign CPU use (:class:`noise.CpuMonitor` over the local ranks' pids) and
tells the group to run more rounds until ``repeats`` are clean (``2·repeats`` at most) and,
when the plan asks for it (``min_s``), until the rounds span that long, but never past
``SPAN_LIMIT`` times that; it keeps every clean round, or the ``repeats`` least disturbed ones.

Sizes follow nccl-tests: S is the whole buffer — the all-reduce and broadcast tensor, the
gathered output of all-gather, the input of reduce-scatter, the message of send/recv
(one way: a ping-pong round trip halved). Data are float32 zeros, so sums never overflow.
``drift`` compares the first and the second half of the kept rounds (the machine changing
under the run: on a shared VM large messages move 10-40 % over minutes, so two runs cannot
agree better than that). ``cpu_s`` is the CPU time each operation costs a rank (gloo burns it in the calling
process and its threads; it competes with compute).

Run as ``python -m parsim.calibrate.comm PLAN.json RESULT.json`` by :mod:`.launch`, with
RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the environment (torchrun sets the same).
"""
from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from ..atomic import write_text
from . import noise
from .compute import keep_rounds

OPS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "send_recv")


@dataclass(frozen=True)
class CommPlan:
    """What to measure: ops, message sizes in bytes, group sizes, kept rounds per point."""

    ops: tuple[str, ...]
    sizes: tuple[int, ...]
    group_sizes: tuple[int, ...]
    repeats: int
    backend: str = "gloo"          # "gloo", "nccl" or "mpi"
    target_s: float = 0.005        # a sample lasts at least this long (inner repeats)
    min_s: float = 0.0             # the rounds of all groups span at least this long (at most SPAN_LIMIT x)
    seed: int = 0

    @classmethod
    def from_json(cls, text: str) -> "CommPlan":
        raw = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class TorchComm:
    """torch.distributed adapter; the process group is made from the env:// variables."""

    def __init__(self, backend: str):
        import torch
        import torch.distributed as dist
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
        self.torch, self.dist, self.backend = torch, dist, backend
        self.device = torch.device("cpu")
        if backend == "nccl":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            torch.set_num_threads(1)
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method="env://")
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self._ag = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        self._rs = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

    def new_group(self, ranks):
        group = self.dist.new_group(ranks) if len(ranks) < self.size else None
        return group

    def barrier(self, group=None) -> None:
        self.dist.barrier(group=group)

    def sync(self) -> None:
        if self.backend == "nccl":
            self.torch.cuda.synchronize()

    def make_op(self, op: str, size_bytes: int, group, g: int):
        """(call, actual bytes, time factor) for this rank."""
        torch, dist = self.torch, self.dist
        count = max(size_bytes // 4 // g * g, g)
        full = torch.zeros(count, device=self.device)
        part = torch.zeros(count // g, device=self.device)
        if op == "all_reduce":
            return (lambda: dist.all_reduce(full, group=group)), count * 4, 1.0
        if op == "reduce_scatter":
            return (lambda: self._rs(part, full, group=group)), count * 4, 1.0
        if op == "all_gather":
            return (lambda: self._ag(full, part, group=group)), count * 4, 1.0
        if op == "broadcast":
            return (lambda: dist.broadcast(full, src=0, group=group)), count * 4, 1.0
        if op == "send_recv":
            peer = 1 - self.rank
            if self.rank == 0:
                return (lambda: (dist.send(full, peer), dist.recv(full, peer))), count * 4, 0.5
            return (lambda: (dist.recv(full, peer), dist.send(full, peer))), count * 4, 0.5
        raise ValueError(f"unknown op {op!r}")

    def max_float(self, value: float, group) -> float:
        t = self.torch.tensor([value], dtype=self.torch.float64, device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX, group=group)
        return float(t.item())

    def bcast_flag(self, flag: bool, group) -> bool:
        t = self.torch.tensor([1.0 if flag else 0.0], dtype=self.torch.float64, device=self.device)
        self.dist.broadcast(t, src=0, group=group)
        return bool(t.item() > 0.5)

    def gather(self, values: np.ndarray, group, g: int) -> np.ndarray:
        """(g, len) array of every group rank's ``values`` (on all ranks)."""
        t = self.torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).to(self.device)
        out = [self.torch.empty_like(t) for _ in range(g)]
        self.dist.all_gather(out, t, group=group)
        return np.stack([o.cpu().numpy() for o in out])

    def all_gather_obj(self, obj) -> list:
        out = [None] * self.size
        self.dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


class MpiComm:
    """mpi4py adapter (run under mpiexec); the same operations on numpy float32 buffers."""

    backend = "mpi"

    def __init__(self):
        from mpi4py import MPI
        self.MPI, self.world = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.world.Get_rank(), self.world.Get_size()

    def new_group(self, ranks):
        color = 0 if self.rank in ranks else self.MPI.UNDEFINED
        return self.world.Split(color, self.rank)

    def barrier(self, group=None) -> None:
        (group or self.world).Barrier()

    def sync(self) -> None:
        pass

    def make_op(self, op: str, size_bytes: int, group, g: int):
        MPI = self.MPI
        count = max(size_bytes // 4 // g * g, g)
        full = np.zeros(count, np.float32)
        part = np.zeros(count // g, np.float32)
        if op == "all_reduce":
            return (lambda: group.Allreduce(MPI.IN_PLACE, full, op=MPI.SUM)), count * 4, 1.0
        if op == "reduce_scatter":
            return (lambda: group.Reduce_scatter_block(full, part, op=MPI.SUM)), count * 4, 1.0
        if op == "all_gather":
            return (lambda: group.Allgather(part, full)), count * 4, 1.0
        if op == "broadcast":
            return (lambda: group.Bcast(full, root=0)), count * 4, 1.0
        if op == "send_recv":
            peer = 1 - self.rank
            if self.rank == 0:
                return (lambda: (group.Send(full, peer), group.Recv(full, peer))), count * 4, 0.5
            return (lambda: (group.Recv(full, peer), group.Send(full, peer))), count * 4, 0.5
        raise ValueError(f"unknown op {op!r}")

    def max_float(self, value: float, group) -> float:
        return float(group.allreduce(value, op=self.MPI.MAX))

    def bcast_flag(self, flag: bool, group) -> bool:
        return bool(group.bcast(flag, root=0))

    def gather(self, values: np.ndarray, group, g: int) -> np.ndarray:
        return np.stack(group.allgather(np.asarray(values, dtype=np.float64)))

    def all_gather_obj(self, obj) -> list:
        return self.world.allgather(obj)

    def close(self) -> None:
        pass


def run_benchmark(comm, plan: CommPlan, progress=None) -> list[dict] | None:
    """Measure every group size of ``plan`` on all ranks; rank 0 returns the table rows."""
    host = socket.gethostname()
    everyone = comm.all_gather_obj((host, os.getpid()))
    local_pids = [pid for h, pid in everyone if h == host]
    rows: list[dict] = []
    sizes = [g for g in plan.group_sizes if g <= comm.size]
    done = [0]
    items_per_group = {g: len(_items(plan, g)) for g in sizes}
    total = plan.repeats * sum(items_per_group.values())

    def tick(n=1.0):
        done[0] += n
        if progress and comm.rank == 0:
            progress(min(total, int(round(done[0]))), total)

    for g in sizes:
        group = comm.new_group(list(range(g)))
        if comm.rank < g:
            group_rows = _measure_group(comm, group if group is not None else None, g, plan,
                                        local_pids, tick)
            rows += group_rows
        comm.barrier(None)
    return rows if comm.rank == 0 else None


def _items(plan: CommPlan, g: int) -> list[tuple[str, int]]:
    return [(op, s) for op in plan.ops for s in plan.sizes if op != "send_recv" or g == 2]


def _measure_group(comm, group, g: int, plan: CommPlan, local_pids, tick) -> list[dict]:
    items = _items(plan, g)
    ops = [comm.make_op(op, size, group if group is not None else _world(comm), g)
           for op, size in items]
    grp = group if group is not None else _world(comm)
    inner = []
    for call, _, _ in ops:                                   # warm up, choose inner repeats
        comm.barrier(grp)
        call()
        comm.sync()
        t0 = time.perf_counter()
        call()
        comm.sync()
        slowest = comm.max_float(time.perf_counter() - t0, grp)
        inner.append(int(min(max(math.ceil(plan.target_s / max(slowest, 1e-7)), 1), 1000)))
    rng = np.random.default_rng(plan.seed + g)
    monitor = noise.CpuMonitor(local_pids)
    kept_t, kept_cpu, foreign = [], [], []
    # rounds to run: ``repeats`` undisturbed ones, and as many more as fill this group's
    # share of ``min_s`` (the host drifts over minutes; rounds spread over a longer span
    # average it out); never past SPAN_LIMIT x that share, so a host that slows down midway or
    # keeps disturbing rounds cannot stretch the run (``_kept`` takes the least disturbed)
    group_min_s = plan.min_s / max(1, len(plan.group_sizes))
    max_rounds = MAX_ROUNDS_FACTOR * plan.repeats
    more, t_start, ticked = True, time.perf_counter(), 0.0
    while more:
        if comm.rank == 0:
            monitor.start()
        t_round = np.zeros(len(items))
        cpu_round = np.zeros(len(items))
        for i in rng.permutation(len(items)):
            call, _, factor = ops[i]
            comm.barrier(grp)
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(inner[i]):
                call()
            comm.sync()
            t_round[i] = (time.perf_counter() - t0) / inner[i] * factor
            cpu_round[i] = (time.process_time() - c0) / inner[i] * factor
        kept_t.append(t_round)
        kept_cpu.append(cpu_round)
        elapsed = time.perf_counter() - t_start
        if comm.rank == 0:
            foreign.append(monitor.stop())
            clean = sum(noise.clean(c) for c in foreign)
            rounds = len(kept_t)
            more = ((clean < plan.repeats and rounds < 2 * plan.repeats)
                    or (elapsed < group_min_s and rounds < max_rounds))
            more = more and (group_min_s <= 0 or elapsed < SPAN_LIMIT * group_min_s)
        more = comm.bcast_flag(more, grp)
        frac = min(1.0, elapsed / group_min_s if group_min_s > 0 else len(kept_t) / plan.repeats)
        tick(len(items) * plan.repeats * frac - ticked)
        ticked = len(items) * plan.repeats * frac
    n_rounds = len(kept_t)
    all_t = comm.gather(np.concatenate(kept_t), grp, g).reshape(g, n_rounds, len(items))
    all_cpu = comm.gather(np.concatenate(kept_cpu), grp, g).reshape(g, n_rounds, len(items))
    # only rank 0's rows are used; the others keep every round
    keep = _kept(foreign, plan.repeats) if comm.rank == 0 else list(range(n_rounds))
    all_t, all_cpu = all_t[:, keep], all_cpu[:, keep]
    discarded = n_rounds - len(keep)
    kept_dirty = sum(1 for r in keep if comm.rank == 0 and not noise.clean(foreign[r]))
    slowest = all_t.max(axis=0)                              # (repeats, items)
    cpu = np.median(all_cpu, axis=1).max(axis=0)             # busiest rank, per item
    rows = []
    for op in plan.ops:
        idx = sorted((i for i, (o, _) in enumerate(items) if o == op), key=lambda i: ops[i][1])
        if not idx:
            continue
        rows.append({
            "backend": comm.backend, "op": op, "ranks": g,
            "size_bytes": [int(ops[i][1]) for i in idx],
            **_point_stats([slowest[:, i] for i in idx]),
            "samples_s": [slowest[:, i].tolist() for i in idx],     # for merge_launches
            "cpu_s": [float(cpu[i]) for i in idx],
            "samples": len(keep), "discarded_rounds": discarded,
            "kept_contaminated_rounds": int(kept_dirty),
            "foreign_cores_max": max((c for c in foreign if c is not None), default=0.0),
        })
    return rows


MAX_ROUNDS_FACTOR = 20           # at most 20 x repeats rounds per group, however short
SPAN_LIMIT = 1.25                # rounds stop at 1.25 x a group's share of min_s


def _kept(foreign: list, repeats: int) -> list[int]:
    """Rounds to keep: every undisturbed round when there are at least ``repeats`` of them,
    else the ``repeats`` least disturbed (:func:`keep_rounds`); in run order."""
    clean = [r for r, c in enumerate(foreign) if noise.clean(c)]
    return clean if len(clean) >= repeats else keep_rounds(foreign, repeats)


def merge_launches(launches: list[list[dict]]) -> list[dict]:
    """One table from the rows of several launches of the workers (fresh processes each).

    A launch settles into its own state for the whole of its life: gloo's 16 MiB
    reduce-scatter, whose temporaries come from the allocator, ran at 22, 25, 26 and 29 ms
    (medians) in four 45-s launches here, each launch's halves within 4 ms of its median
    but the launches 30 % apart. Pooling several launches' rounds measures what a fresh job
    meets on average instead of one draw. Per point: the median, spread and drift of the
    pooled rounds (in launch order), the median of the launches' CPU times; rounds and
    discards add up, foreign load takes the worst. The raw ``samples_s`` are dropped."""
    merged = {}
    for rows in launches:
        for row in rows:
            key = (row["backend"], row["op"], row["ranks"])
            merged.setdefault(key, []).append(row)
    out = []
    for parts in merged.values():
        first = parts[0]
        row = {k: v for k, v in first.items() if k != "samples_s"}
        pooled = [sum((p["samples_s"][i] for p in parts), []) for i in range(len(first["size_bytes"]))]
        row.update(
            **_point_stats(pooled),
            cpu_s=[float(np.median([p["cpu_s"][i] for p in parts])) for i in range(len(pooled))],
            samples=sum(p["samples"] for p in parts),
            discarded_rounds=sum(p["discarded_rounds"] for p in parts),
            kept_contaminated_rounds=sum(p["kept_contaminated_rounds"] for p in parts),
            foreign_cores_max=max(p["foreign_cores_max"] for p in parts),
            launches=len(parts))
        out.append(row)
    return out


def _point_stats(per_size) -> dict:
    """``time_s`` (median), ``spread`` and ``drift`` of each size's rounds (in time order)."""
    return {"time_s": [float(np.median(x)) for x in per_size],
            "spread": [noise.spread(x) for x in per_size],
            "drift": [_drift(x) for x in per_size]}


def _drift(samples) -> float:
    """|median of the first half of the rounds - median of the second half| / median: how
    far the machine moved during the measurement (rounds run in time order)."""
    samples = np.asarray(samples, dtype=float)
    half = len(samples) // 2
    if half < 2:
        return 0.0
    return float(abs(np.median(samples[:half]) - np.median(samples[half:])) / np.median(samples))


def _world(comm):
    return getattr(comm, "world", None)


def main(argv=None) -> int:
    """Worker entry: ``python -m parsim.calibrate.comm PLAN.json RESULT.json [--mpi]``."""
    argv = sys.argv[1:] if argv is None else argv
    plan = CommPlan.from_json(open(argv[0]).read())
    comm = MpiComm() if plan.backend == "mpi" else TorchComm(plan.backend)

    def report(done, total):
        print(f"PROGRESS {done} {total}", flush=True)
    try:
        rows = run_benchmark(comm, plan, report)
        if comm.rank == 0:
            write_text(argv[1], json.dumps({"rows": rows, "world_size": comm.size}))
    finally:
        comm.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
