"""Run a collective's step schedule through the discrete-event network: math and time at once.

:class:`DesExecutor` is an ``executor`` for :class:`parsim.numerics.comm.Comm` (and so for
``run_check(config, executor=...)``). For every collective it gets the flat per-rank
buffers and the :class:`~parsim.numerics.comm.Schedule`, and runs the schedule in a simpy
environment on a :class:`parsim.engines.network.Fabric` built on the cluster graph:

* step i is started as soon as every step in ``step_deps(sched)[i]`` has been delivered;
* at its start it reads its payload (``read_payload``, a copy of the source chunks) and
  sends one flow of ``step_elems · itemsize`` bytes from the source rank's node to the
  destination rank's node, routed on the graph (latency of the route, then a max-min fair
  share of every link it crosses, shared with whatever other steps are in flight);
* when the flow's last byte arrives the payload is applied (``deliver``; ``on_step`` is
  called first, as ``apply_steps`` does).

Deliveries into the same chunk of the same rank are applied in the order ``apply_steps``
applies them (round, then step order), whatever order they arrive in: the children of a
tree node reducing in one round, the workers pushing to one parameter server, and writes
``step_deps`` does not order (in Rabenseifner's all-reduce for n not a power of two, a
halving step may arrive before the round-0 step that adds a whole buffer into the same
rank). An early arrival waits in the receiver until its predecessors are applied, so the
buffers come out bit-identical to the reference executor; dependent steps wait for the
delivery, not just the arrival.

The executor keeps one simulated clock: collectives run one after another (no overlap with
each other or with compute), and ``records`` holds one entry per collective with its
simulated seconds; ``total_s`` is the sum.

Placement: group rank i runs on ``cluster.devices[i]`` (modulo the device count); for the
parameter-server schedules (``ps_push``/``ps_pull``: workers 0..n-1, then servers) the
servers go to ``cluster.servers`` when the cluster has them. ``Comm`` does not tell an
executor which global ranks form the group, so for a collective of a strided group
(the DP group of a dp×tp or dp×pp layout) the placement is the group's shape on the first
devices, not its real devices; pass ``placement(sched) -> [node, ...]`` to override.
Point-to-point sends (``Comm.send``: the pipeline's activations and gradients) go through
:meth:`DesExecutor.send` as the one-step ``P2P`` schedule carrying the real array, placed
by global rank (rank r on ``cluster.devices[r]``, modulo the device count), and are timed
and recorded (schedule ``"p2p"``) like the collectives.

>>> import numpy as np
>>> from parsim.topology import build_cluster
>>> from parsim.numerics.comm import ring_steps
>>> c = build_cluster({"topology": "ring", "gpus": 2, "link_bandwidth": 8.0,
...                    "link_latency": 1.0})
>>> ex = DesExecutor(c)
>>> ex([np.array([1., 2.]), np.array([10., 20.])], ring_steps(2))
[array([11., 22.]), array([11., 22.])]
>>> ex.total_s             # 2 rounds of (1 s latency + 8 B at 8 B/s)
4.0
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import simpy

from parsim.engines.network import Fabric
from parsim.numerics.comm import (P2P, Schedule, chunk_bounds, deliver, read_payload,
                                  step_deps, step_elems)

PS_SCHEDULES = ("ps_push", "ps_pull")


def default_placement(cluster) -> Callable[[Schedule], list]:
    """Group rank i -> ``cluster.devices[i]``; PS servers -> ``cluster.servers``."""
    devices = list(cluster.devices)
    servers = list(getattr(cluster, "servers", ()) or ())

    def place(sched: Schedule) -> list:
        if sched.name in PS_SCHEDULES:
            n_servers = sched.n_chunks
            n_workers = sched.n_ranks - n_servers
            pool = servers or devices[n_workers:] or devices
            return ([devices[w % len(devices)] for w in range(n_workers)]
                    + [pool[j % len(pool)] for j in range(n_servers)])
        return [devices[r % len(devices)] for r in range(sched.n_ranks)]

    return place


def _apply_order(sched: Schedule) -> list[int]:
    """Step ids in the order ``apply_steps`` delivers them: by round, then step order."""
    return sorted(range(len(sched.steps)), key=lambda i: (sched.steps[i].round, i))


def _conflicts(sched: Schedule) -> list[tuple[int, ...]]:
    """For each step, the last step before it in apply order that writes each of its
    chunks on the same destination: those must be applied first (a chain per chunk)."""
    last: dict[tuple[int, int], int] = {}
    out: list[tuple[int, ...]] = [()] * len(sched.steps)
    for i in _apply_order(sched):
        s = sched.steps[i]
        before = {last[s.dst, c] for c in s.chunks if (s.dst, c) in last}
        for c in s.chunks:
            last[s.dst, c] = i
        out[i] = tuple(sorted(before))
    return out


class DesExecutor:
    """``executor(bufs, sched, on_step)`` that moves every step as a flow on ``cluster``.

    Parameters
    ----------
    cluster : :class:`parsim.topology.Cluster` (``build_cluster(scenario.cluster)``).
    placement : callable ``sched -> list of graph nodes`` (one per schedule rank);
        default :func:`default_placement`.

    Attributes
    ----------
    records : list of dicts, one per collective: schedule, n_ranks, steps, rounds,
        bytes (all steps together), seconds (simulated).
    total_s : simulated seconds of all collectives so far.
    """

    def __init__(self, cluster, placement: Callable | None = None):
        self.cluster = cluster
        self.env = simpy.Environment()
        self.fabric = Fabric(self.env, cluster.graph, route=cluster.route)
        self.placement = placement or default_placement(cluster)
        self.records: list[dict] = []
        self._plans: dict = {}

    @property
    def total_s(self) -> float:
        return float(sum(r["seconds"] for r in self.records))

    def _plan(self, sched: Schedule):
        hit = self._plans.get(sched)
        if hit is None:
            order = _apply_order(sched)
            hit = (step_deps(sched), _conflicts(sched), {i: k for k, i in enumerate(order)})
            if len(self._plans) < 1024:
                self._plans[sched] = hit
        return hit

    def send(self, bufs, src: int, dst: int, on_step=None):
        """Time and apply a point-to-point send of ``bufs[0]`` into ``bufs[1]`` from global
        rank ``src``'s device to ``dst``'s (the :data:`~parsim.numerics.comm.P2P` schedule)."""
        devices = list(self.cluster.devices)
        nodes = [devices[src % len(devices)], devices[dst % len(devices)]]
        return self(bufs, P2P, on_step, nodes=nodes)

    def __call__(self, bufs, sched: Schedule, on_step=None, nodes=None):
        if any(np.ndim(b) != 1 for b in bufs):
            raise ValueError("DesExecutor works on flat 1-D buffers; pass a.reshape(-1)")
        if len(bufs) != sched.n_ranks:
            raise ValueError(f"{sched.name}: {len(bufs)} buffers for {sched.n_ranks} ranks")
        env, fabric, steps = self.env, self.fabric, sched.steps
        deps, conflicts, rank_in_order = self._plan(sched)
        nodes = self.placement(sched) if nodes is None else nodes
        bounds = chunk_bounds(len(bufs[0]), sched.n_chunks)
        itemsize = bufs[0].dtype.itemsize
        delivered = [env.event() for _ in steps]
        applied = [False] * len(steps)
        arrived: dict[int, list] = {}          # step -> payload, waiting for its turn

        def apply_ready():
            progress = True
            while progress:
                progress = False
                for i in sorted(arrived, key=rank_in_order.__getitem__):
                    if all(applied[j] for j in conflicts[i]):
                        payload = arrived.pop(i)
                        if on_step is not None:
                            on_step(steps[i], payload)
                        deliver(bufs, steps[i], payload, bounds)
                        applied[i] = True
                        delivered[i].succeed()
                        progress = True

        def run_step(i):
            if deps[i]:
                yield env.all_of([delivered[j] for j in deps[i]])
            s = steps[i]
            payload = read_payload(bufs, s, bounds)
            size = step_elems(s, bounds) * itemsize
            yield fabric.transfer([(nodes[s.src], nodes[s.dst])], size,
                                  name=f"{sched.name}[{i}]")
            arrived[i] = payload
            apply_ready()

        t0 = env.now
        for i in range(len(steps)):
            env.process(run_step(i))
        env.run()
        if not all(applied):
            missing = applied.count(False)
            raise RuntimeError(f"DES executor: {missing} of {len(steps)} steps of "
                               f"{sched.name} were never delivered (dependency cycle?)")
        self.records.append(dict(
            schedule=sched.name, n_ranks=sched.n_ranks, steps=len(steps), rounds=sched.rounds,
            bytes=int(sum(step_elems(s, bounds) for s in steps) * itemsize),
            seconds=float(env.now - t0)))
        return bufs
