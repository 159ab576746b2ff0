"""Discrete-event engine: the per-rank Program on the cluster graph, in simpy.

One simpy process per (rank, stream), started in sorted order. For each op in
stream order the process waits for the op's dependencies, then

* a compute op holds the stream for ``duration_s``;
* a send or collective waits until every rank of the op has reached it (the
  last one to arrive starts it), then runs on the network: a send is one flow,
  a collective runs its algorithm's steps (:mod:`parsim.engines.des_steps`) on
  the group's device nodes, the parameter server (algorithm ``ps``) pushes shards
  to ``cluster.servers`` and pulls them back.

Transfers share link bandwidth max-min fairly (:mod:`parsim.engines.network`).
``network="lockstep"`` (default) moves each collective step as one flow group with
one rate for all its members; ``network="flows"`` is the plain reference, one flow
per transfer, and gives the same times whenever the step's members are symmetric.

Fidelity: ``"full"`` simulates every rank; ``"reduced"`` simulates one data-parallel
replica and carries the other replicas' identical traffic on the shared links
(:mod:`parsim.engines.des_replicas`); ``"auto"`` reduces above
``FULL_FIDELITY_MAX_RANKS`` ranks when the replicas are symmetric. The result's
``notes`` say when the reduction was used.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import simpy

from parsim.engines import des_steps
from parsim.engines.des_replicas import Replicas, find_replicas
from parsim.engines.network import Fabric
from parsim.program import COMPUTE, SEND, Program

FULL_FIDELITY_MAX_RANKS = 256
CATEGORIES = ("compute", "dp", "tp", "pp", "ps", "optimizer")


class CountingEnvironment(simpy.Environment):
    """A simpy environment that counts the events it processes."""

    def __init__(self, initial_time=0):
        super().__init__(initial_time)
        self.events = 0

    def step(self):
        self.events += 1
        super().step()


@dataclass(frozen=True)
class DesResult:
    """What a DES run found. Times in seconds of simulated time from step start."""

    start_s: np.ndarray            # per op id
    end_s: np.ndarray              # per op id
    step_time_s: float             # makespan
    busy_s: dict                   # rank -> {category: seconds}
    events: int                    # simpy events processed
    flows: float                   # point-to-point transfers carried on the links
    rate_computations: int         # max-min fair allocations computed
    wall_s: float                  # host seconds the simulation took
    fidelity: str                  # "full" | "reduced"
    network: str                   # "lockstep" | "flows"
    notes: tuple = ()
    trace: tuple = field(default=())   # ((event, t_s), ...) when run with trace=True


def category(op) -> str:
    """The breakdown bucket of an op (its own, or one implied by its kind)."""
    if op.category:
        return op.category
    return {COMPUTE: "compute", SEND: "pp"}.get(op.kind, "dp")


def run(program: Program, cluster, *, fidelity: str = "auto", trace: bool = False,
        network: str = "lockstep", replicas: Replicas | None = None) -> DesResult:
    """Simulate one step of ``program`` on ``cluster`` (see module docstring).

    Examples
    --------
    >>> from parsim.program import Program, COMPUTE
    >>> p = Program(num_ranks=1); a = p.add(COMPUTE, [0], "compute", "fwd", duration_s=2.0)
    >>> _ = p.add(COMPUTE, [0], "compute", "bwd", deps=[a], duration_s=3.0)
    >>> run(p, cluster=None).step_time_s
    5.0
    """
    if fidelity not in ("auto", "full", "reduced"):
        raise ValueError(f"fidelity = {fidelity!r}: must be one of auto, full, reduced")
    if network not in ("lockstep", "flows"):
        raise ValueError(f"network = {network!r}: must be one of lockstep, flows")
    t0 = time.perf_counter()
    notes = []
    reps = replicas    # given when the lowering built replica 0 only
    streams = program.streams()
    if reps is None and (fidelity == "reduced" or (
            fidelity == "auto" and program.num_ranks > FULL_FIDELITY_MAX_RANKS)):
        reps = find_replicas(program, streams)
        if reps is None:
            notes.append("no symmetric replicas found: simulated every rank")
    if reps is not None:
        notes.append(f"symmetric replicas: simulated 1 of {reps.count} DP replicas "
                     f"({len(reps.ranks)} of {program.num_ranks} ranks); the other "
                     f"replicas' traffic is carried on the shared links")
    if program.replicas > 1:
        notes.append(f"program holds 1 of {program.replicas} replicas (reduced at lowering)")
    sim = _Sim(program, cluster, reps, network, trace, streams)
    sim.env.run()
    unfinished = [i for i in sim.own_ops if not sim.done[i].processed]
    if unfinished:
        names = ", ".join(program.ops[i].name for i in unfinished[:3])
        raise RuntimeError(f"DES deadlock: {len(unfinished)} ops never ran (first: {names})")
    start, end = sim.start, sim.end
    if reps is not None:
        start, end = start[reps.op_rep], end[reps.op_rep]
    return DesResult(
        start_s=start, end_s=end,
        step_time_s=float(np.max(end)) if len(end) else 0.0,
        busy_s=_busy(program, start, end), events=sim.env.events,
        flows=sim.fabric.flows if sim.fabric else 0.0,
        rate_computations=sim.fabric.rate_computations if sim.fabric else 0,
        wall_s=time.perf_counter() - t0,
        fidelity="full" if reps is None else "reduced", network=network,
        notes=tuple(notes), trace=tuple(sim.trace or ()))


def exposed_s(result: DesResult, program: Program, rank: int, cat: str) -> float:
    """Seconds ``rank`` spends in ``cat`` ops while none of its compute ops runs.

    With DP all-reduce overlapped with the backward pass this is the exposed
    communication: what is left of it after the backward pass.
    """
    def merged(ops):
        spans = sorted((result.start_s[o.id], result.end_s[o.id]) for o in ops)
        out = []
        for a, b in spans:
            if out and a <= out[-1][1]:
                out[-1][1] = max(out[-1][1], b)
            else:
                out.append([a, b])
        return out

    mine = [op for op in program.ops if rank in op.ranks]
    busy = merged([op for op in mine if category(op) == cat])
    compute = merged([op for op in mine if op.kind == COMPUTE])
    overlap = sum(max(0.0, min(b, d) - max(a, c)) for a, b in busy for c, d in compute)
    return float(sum(b - a for a, b in busy) - overlap)


def _busy(program, start, end) -> dict:
    """Seconds per rank and category: one (rank, category) cell per op and rank."""
    cats = list(CATEGORIES) + sorted({op.category for op in program.ops} - set(CATEGORIES) - {""})
    col = {c: i for i, c in enumerate(cats)}
    rank = np.fromiter((r for op in program.ops for r in op.ranks), dtype=np.int64)
    op_of = np.fromiter((op.id for op in program.ops for _ in op.ranks), dtype=np.int64)
    cat = np.array([col[category(op)] for op in program.ops], dtype=np.int64)
    cells = np.zeros((program.num_ranks, len(cats)))
    np.add.at(cells, (rank, cat[op_of]), (end - start)[op_of])
    return {r: dict(zip(cats, map(float, cells[r]))) for r in range(program.num_ranks)}


class _Sim:
    """The engine's own state for one run (kept out of the frozen ops)."""

    def __init__(self, program, cluster, reps: Replicas | None, network, trace, streams):
        self.p, self.cluster, self.reps, self.network = program, cluster, reps, network
        self.env = env = CountingEnvironment()
        self.trace = [] if trace else None
        self.fabric = (Fabric(env, cluster.graph, route=cluster.route)
                       if cluster is not None else None)
        n_ops = len(program.ops)
        self.start = np.full(n_ops, np.nan)
        self.end = np.full(n_ops, np.nan)
        self.arrived = [0] * n_ops
        self._steps_cache: dict = {}
        ranks = set(reps.ranks) if reps else set(range(program.num_ranks))
        streams = {k: v for k, v in streams.items() if k[0] in ranks}
        self.own_ops = sorted({i for ids in streams.values() for i in ids})
        self.done = {i: env.event() for i in self.own_ops}
        self.need = {i: sum(r in ranks for r in program.ops[i].ranks) for i in self.own_ops}
        rep = reps.op_rep if reps else None
        self.deps = {i: sorted({int(rep[d]) if rep is not None else d
                                for d in program.ops[i].deps} - {i}) for i in self.own_ops}
        for key in sorted(streams):
            env.process(self._stream(streams[key]))

    def _log(self, what, op):
        if self.trace is not None:
            self.trace.append((f"{what} {op.name}", self.env.now))

    def _stream(self, ids):
        env, ops = self.env, self.p.ops
        for i in ids:
            pending = [self.done[d] for d in self.deps[i] if not self.done[d].processed]
            if pending:
                yield env.all_of(pending)
            op = ops[i]
            if op.kind == COMPUTE and self.need[i] == 1:
                self.start[i] = env.now
                self._log("start", op)
                yield env.timeout(op.duration_s)
                self._finish(op)
                continue
            self.arrived[i] += 1
            if self.arrived[i] == self.need[i]:
                env.process(self._communicate(op))
            yield self.done[i]

    def _finish(self, op):
        self.end[op.id] = self.env.now
        self._log("end", op)
        self.done[op.id].succeed()

    def _communicate(self, op):
        env = self.env
        self.start[op.id] = env.now
        self._log("start", op)
        if op.kind == COMPUTE:                  # a compute op spanning ranks: a barrier
            yield env.timeout(op.duration_s)
            self._finish(op)
            return
        if self.fabric is None:
            raise ValueError(f"op {op.name!r} moves bytes: run() needs a cluster")
        for lockstep, singles, size in self._steps(op):
            if self.network == "lockstep":
                yield self.fabric.transfer(lockstep, size, name=op.name)
            else:
                yield env.all_of([self.fabric.transfer(ps, size, name=op.name) for ps in singles])
        self._finish(op)

    def _steps(self, op):
        """The op's steps as (flow group, single flows, bytes per member), cached."""
        key = (op.kind, op.coll, op.algorithm, op.ranks, op.size_bytes, op.id in self._cross())
        hit = self._steps_cache.get(key)
        if hit is None:
            hit = self._compile(op, replicate=not key[-1])
            self._steps_cache[key] = hit
        return hit

    def _cross(self):
        return self.reps.cross if self.reps else frozenset()

    def _compile(self, op, replicate):
        devices, group = self.cluster.devices, op.ranks
        nodes = [devices[r] for r in group] + list(self.cluster.servers)
        copies = (self.reps.copies if self.reps and replicate else None)
        if copies:
            node_sets = [[devices[copies[r][j]] for r in group] + list(self.cluster.servers)
                         for j in range(self.reps.count)]
        else:
            node_sets = [nodes]
        compiled, seen = [], {}
        for pairs, size in _algorithm_steps(op, self.cluster):
            hit = seen.get(id(pairs))
            if hit is None:
                node_pairs = [(ns[i], ns[j]) for ns in node_sets for i, j in pairs]
                hit = (self.fabric.pathset(node_pairs),
                       [self.fabric.pathset([pair]) for pair in node_pairs]
                       if self.network == "flows" else None)
                seen[id(pairs)] = hit
            compiled.append((hit[0], hit[1], size))
        return compiled


def _algorithm_steps(op, cluster):
    """The lock-step transfers of a send or collective, over group member indices."""
    n = len(op.ranks)
    if op.kind == SEND:
        return [(((0, 1),), op.size_bytes)]
    algorithm = op.algorithm or "ring"
    if algorithm == "ps":
        if not cluster.servers:
            raise ValueError(f"op {op.name!r}: algorithm ps needs cluster.servers")
        return des_steps.ps_push_pull(n, len(cluster.servers), op.size_bytes)
    if n <= 1:
        return []
    if algorithm == "hierarchical":
        return des_steps.hierarchical_all_reduce([cluster.host_of(r) for r in op.ranks],
                                                 op.size_bytes)
    fn = des_steps.STEPS.get((op.coll, algorithm))
    if fn is None:
        known = sorted(des_steps.STEPS) + [("all_reduce", "hierarchical"), ("all_reduce", "ps")]
        raise ValueError(f"op {op.name!r}: no DES steps for {op.coll} with {algorithm}; "
                         f"known: {known}")
    return fn(n, op.size_bytes)
