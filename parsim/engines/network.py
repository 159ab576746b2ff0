"""Flow-level network for the discrete-event engine: max-min fair sharing on a graph.

A transfer is routed over the cluster graph and pays the two halves of the
alpha-beta model separately, as ns.py's ``Wire`` and ``Port`` do:

* latency (alpha): the sum of the route's edge ``latency_s``, paid once, before
  any byte moves and without occupying bandwidth;
* bandwidth (beta): while streaming, the flow gets its max-min fair share of every
  edge on its route, recomputed whenever a flow starts or ends.

Max-min fairness by progressive filling (Bertsekas & Gallager, *Data Networks*,
2nd ed., 1992, sec. 6.5.2): raise every unfrozen flow's rate together until some
edge is full, freeze the flows that cross it, repeat. Every flow then has a
*bottleneck* edge: one that is full and on which no flow is faster.

Flow groups and weights
-----------------------
One *flow group* is a set of transfers that start together with the same size
(one step of a collective: every rank sends its chunk to its neighbour). The group
is one entity with one rate for all its members, the rate progressive filling
gives when its members must move in lock-step: the group's load on an edge is
``members crossing it × weight``. When the members are symmetric (each sees the
same bottleneck) this is exactly the per-flow max-min allocation; otherwise it is
the lock-step allocation a step barrier imposes anyway (the step ends with its
slowest member). ``weight`` w makes an entity stand for w identical flows on the
same links (replicated traffic).

Each entity waits on ``env.timeout(remaining / rate) | fabric.changed`` with a
fresh ``changed`` event per recomputation (simpy events fire once). Starts and
ends at one instant are batched into one recomputation, and identical sets of
active entities reuse the rates computed before (a ring's 2(n-1) identical steps
cost one computation).

Units: bytes, seconds, bytes/s. Edge attributes read: ``bw_Bps``, ``latency_s``.
"""
from __future__ import annotations

import math

import networkx as nx
import numpy as np
import simpy

from ..maxmin import max_min_rates


class PathSet:
    """The routes of a flow group's members, compiled once into incidence arrays."""

    __slots__ = ("id", "pairs", "edges", "loads", "latency_s")

    def __init__(self, pid, pairs, edges, loads, latency_s):
        self.id = pid
        self.pairs = pairs          # ((src, dst), ...) graph nodes
        self.edges = edges          # int array: edge index per (member, edge)
        self.loads = loads          # float array: members crossing × weight
        self.latency_s = latency_s  # slowest member's path latency


class _Entity:
    __slots__ = ("paths", "size", "remaining", "rate", "name")

    def __init__(self, paths, size, name):
        self.paths, self.size, self.remaining, self.rate, self.name = paths, size, size, 0.0, name


class Fabric:
    """Active flows on a graph's edges with max-min fair rates.

    Parameters
    ----------
    env : simpy.Environment
    graph : networkx.DiGraph with edge attributes ``bw_Bps`` and ``latency_s``.
    route : callable (src, dst) -> tuple of edges; default: fewest-latency path.
    trace : list to append ``(event, env.now)`` to, or None.

    Examples
    --------
    >>> import simpy, networkx as nx
    >>> g = nx.DiGraph(); g.add_edge("a", "b", bw_Bps=10.0, latency_s=1.0)
    >>> env = simpy.Environment(); fab = Fabric(env, g)
    >>> _ = fab.transfer([("a", "b")], 20.0); _ = fab.transfer([("a", "b")], 20.0)
    >>> env.run(); env.now          # 1 s latency, then 40 B at 10 B/s shared
    5.0
    """

    def __init__(self, env: simpy.Environment, graph: nx.DiGraph, route=None, *, trace=None):
        self.env = env
        self.graph = graph
        self.edge_index = {e: i for i, e in enumerate(graph.edges)}
        self.cap_Bps = np.array([graph.edges[e]["bw_Bps"] for e in graph.edges], dtype=float)
        self.edge_latency_s = np.array([graph.edges[e]["latency_s"] for e in graph.edges],
                                       dtype=float)
        self._route = route or self._default_route
        self._routes: dict = {}
        self._pathsets: dict = {}
        self._active: dict[int, _Entity] = {}
        self._serial = 0
        self._t_settled = env.now
        self._dirty = False
        self._rate_cache: dict = {}
        self.changed = env.event()
        self.trace = trace
        self.rate_computations = 0
        self.flows = 0          # member transfers carried (weights included)

    # -- routing -------------------------------------------------------------
    def _default_route(self, src, dst):
        path = nx.shortest_path(self.graph, src, dst, weight="latency_s")
        return tuple(zip(path[:-1], path[1:]))

    def path(self, src, dst) -> tuple[np.ndarray, float]:
        """Edge indices and latency (s) of the route src -> dst (cached)."""
        key = (src, dst)
        hit = self._routes.get(key)
        if hit is None:
            idx = np.array([self.edge_index[e] for e in self._route(src, dst)], dtype=np.int64)
            hit = (idx, float(self.edge_latency_s[idx].sum()))
            self._routes[key] = hit
        return hit

    def pathset(self, pairs, weight: float = 1.0) -> PathSet:
        """Compile the routes of a group's (src, dst) pairs; cached per (pairs, weight)."""
        pairs = tuple(pairs)
        key = (pairs, weight)
        ps = self._pathsets.get(key)
        if ps is None:
            routes = [self.path(s, d) for s, d in pairs if s != d]
            edges = (np.concatenate([r[0] for r in routes]) if routes
                     else np.zeros(0, dtype=np.int64))
            loads = np.full(len(edges), float(weight))
            latency = max((r[1] for r in routes), default=0.0)
            ps = PathSet(len(self._pathsets), pairs, edges, loads, latency)
            self._pathsets[key] = ps
        return ps

    # -- transfers -----------------------------------------------------------
    def transfer(self, pairs, size_bytes: float, *, weight: float = 1.0, name: str = "flow"):
        """Send ``size_bytes`` from each src to its dst as one lock-step flow group.

        ``pairs`` is a list of (src, dst) nodes or a :class:`PathSet`. Returns the
        simpy process; it fires when the last byte of every member has arrived.
        """
        ps = pairs if isinstance(pairs, PathSet) else self.pathset(pairs, weight)
        self.flows += len(ps.pairs) * weight
        return self.env.process(self._run(_Entity(ps, float(size_bytes), name)))

    def _run(self, ent: _Entity):
        env = self.env
        if ent.paths.latency_s > 0:
            yield env.timeout(ent.paths.latency_s)
        if ent.size <= 0 or len(ent.paths.edges) == 0:
            return
        key = self._serial
        self._serial += 1
        self._active[key] = ent
        self._log("start", ent)
        self._mark_dirty()
        while True:
            changed = self.changed
            if ent.rate == math.inf:
                break
            if ent.rate > 0:
                left = ent.remaining - ent.rate * (env.now - self._t_settled)
                # done, or too little left for the clock to move (huge rates, late times)
                if left <= 1e-9 * ent.size or env.now + left / ent.rate == env.now:
                    break
                yield env.timeout(left / ent.rate) | changed
            else:
                yield changed
        del self._active[key]
        self._log("end", ent)
        self._mark_dirty()

    def _log(self, what, ent):
        if self.trace is not None:
            self.trace.append((f"{what} {ent.name}", self.env.now))

    def _mark_dirty(self):
        """Recompute rates once, after every start and end at this instant."""
        if not self._dirty:
            self._dirty = True
            self.env.timeout(0).callbacks.append(self._recompute)

    def _recompute(self, _event):
        self._dirty = False
        dt = self.env.now - self._t_settled
        ents = list(self._active.values())
        if dt > 0:
            for e in ents:                  # settle bytes moved at the old rates
                e.remaining -= e.rate * dt
        self._t_settled = self.env.now
        if ents:
            for e, r in zip(ents, self.rates([e.paths for e in ents])):
                e.rate = float(r)
        old, self.changed = self.changed, self.env.event()
        old.succeed()

    def rates(self, pathsets) -> np.ndarray:
        """Max-min fair rate per member of each group in ``pathsets`` (cached)."""
        key = tuple(ps.id for ps in pathsets)
        hit = self._rate_cache.get(key)
        if hit is None:
            self.rate_computations += 1
            flow_of = np.concatenate([np.full(len(ps.edges), i, dtype=np.int64)
                                      for i, ps in enumerate(pathsets)])
            edges = np.concatenate([ps.edges for ps in pathsets])
            loads = np.concatenate([ps.loads for ps in pathsets])
            hit = max_min_rates(flow_of, edges, loads, self.cap_Bps, len(pathsets))
            if len(self._rate_cache) < 100_000:
                self._rate_cache[key] = hit
        return hit
