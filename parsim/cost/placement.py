"""Collective time for a group of ranks placed on a cluster graph (closed form).

The flat formulas of :mod:`parsim.cost.collectives` need one per-step bandwidth B
and latency α. On a graph they come from the group's placement: for each step
pattern of the algorithm (ring: every rank sends to its successor) B is the
slowest flow's max-min fair rate when all of that step's flows run at once
(``Cluster.concurrent_rate_Bps``), and α the longest path latency. Links shared
with *other* groups are not seen here; the discrete-event engine sees them.

``auto`` picks the fastest applicable algorithm, as NCCL's tuner aims to.
"""
from __future__ import annotations

from functools import lru_cache

from . import collectives as cc

ALGORITHMS = ("ring", "tree", "halving_doubling", "hierarchical")


def _ring_pairs(nodes):
    n = len(nodes)
    return [(nodes[i], nodes[(i + 1) % n]) for i in range(n)]


def _step(cluster, pairs):
    pairs = [(a, b) for a, b in pairs if a != b]
    if not pairs:
        return float("inf"), 0.0
    bw = cluster.concurrent_rate_Bps(pairs)
    alpha = max(cluster.latency_s(a, b) for a, b in pairs)
    return bw, alpha


def _pow2_pairs(nodes):
    """Partner exchanges at distance 1, 2, 4, ... (halving-doubling and binomial tree)."""
    n = len(nodes)
    p = 1 << (n.bit_length() - 1)
    steps, d = [], 1
    while d < p:
        steps.append([(nodes[i], nodes[i ^ d]) for i in range(p)])
        d <<= 1
    return steps


@lru_cache(maxsize=8192)
def _ring_params(cluster, ranks: tuple):
    return _step(cluster, _ring_pairs([cluster.devices[r] for r in ranks]))


def ring_params(cluster, ranks):
    """(B, α) of a ring over ``ranks`` in the given order (cached per group)."""
    return _ring_params(cluster, tuple(ranks))


@lru_cache(maxsize=8192)
def _tree_params(cluster, ranks: tuple):
    nodes = [cluster.devices[r] for r in ranks]
    steps = _pow2_pairs(nodes) or [_ring_pairs(nodes)]
    res = [_step(cluster, s) for s in steps]
    if len(nodes) & (len(nodes) - 1):   # extra ranks pair with the first ones
        p = 1 << (len(nodes).bit_length() - 1)
        res.append(_step(cluster, [(nodes[i], nodes[i - p]) for i in range(p, len(nodes))]))
    return min(b for b, _ in res), max(a for _, a in res)


def split_by_host(cluster, ranks):
    """Ranks grouped by host, in order of first appearance; None if uneven."""
    hosts: dict[int, list[int]] = {}
    for r in ranks:
        hosts.setdefault(cluster.host_of(r), []).append(r)
    sizes = {len(v) for v in hosts.values()}
    return list(hosts.values()) if len(sizes) == 1 else None


def group_time_s(cluster, ranks, op: str, size_bytes: float, algorithm: str = "auto") -> tuple[float, str]:
    """(seconds, algorithm used) for collective ``op`` of ``size_bytes`` over ``ranks``."""
    return _group_time(cluster, tuple(ranks), op, float(size_bytes), algorithm)


@lru_cache(maxsize=4096)
def _group_time(cluster, ranks, op, size_bytes, algorithm):
    n = len(ranks)
    if n <= 1 or size_bytes <= 0:
        return 0.0, algorithm if algorithm != "auto" else "ring"
    if op != "all_reduce":
        bw, alpha = ring_params(cluster, ranks)   # RS / AG / A2A / broadcast run as rings
        return cc.FLAT[(op, "ring")](n, size_bytes, bw, alpha), "ring"
    choices = ALGORITHMS if algorithm == "auto" else (algorithm,)
    best = None
    for alg in choices:
        t = _all_reduce(cluster, ranks, size_bytes, alg)
        if t is not None and (best is None or t < best[0]):
            best = (t, alg)
    if best is None:  # hierarchical asked for a group inside one host: it is a ring there
        best = (_all_reduce(cluster, ranks, size_bytes, "ring"), "ring")
    return best


def _all_reduce(cluster, ranks, size_bytes, alg):
    n = len(ranks)
    if alg == "ring":
        bw, alpha = ring_params(cluster, ranks)
        return cc.ring_all_reduce_s(n, size_bytes, bw, alpha)
    if alg == "tree":
        bw, alpha = _tree_params(cluster, ranks)
        return cc.tree_all_reduce_s(n, size_bytes, bw, alpha)
    if alg == "halving_doubling":
        bw, alpha = _tree_params(cluster, ranks)
        return cc.halving_doubling_all_reduce_s(n, size_bytes, bw, alpha)
    if alg == "hierarchical":
        hosts = split_by_host(cluster, ranks)
        if not hosts or len(hosts) in (1, n):
            return None
        g = len(hosts[0])
        bw_i, a_i = ring_params(cluster, hosts[0])
        # all g inter-host rings run at once, one per local rank
        nodes_all = [_ring_pairs([cluster.devices[h[j]] for h in hosts]) for j in range(g)]
        bw_e, a_e = _step(cluster, [pair for ring in nodes_all for pair in ring])
        return cc.hierarchical_all_reduce_s(g, len(hosts), size_bytes, bw_i, a_i, bw_e, a_e)
    raise ValueError(f"unknown algorithm {alg!r}")


def p2p_time_s(cluster, src_rank: int, dst_rank: int, size_bytes: float, parallel_flows=1) -> float:
    """Point-to-point transfer: α + S/B along the route (B shared by ``parallel_flows``)."""
    a, b = cluster.devices[src_rank], cluster.devices[dst_rank]
    if a == b or size_bytes <= 0:
        return 0.0
    return cluster.latency_s(a, b) + size_bytes * parallel_flows / cluster.bottleneck_Bps(a, b)


def ps_time_s(cluster, worker_ranks, size_bytes: float, servers: int) -> float:
    """Parameter-server push + pull over the cluster's server hosts (Li et al. 2014)."""
    if not cluster.servers:
        return None
    k = min(servers, len(cluster.servers))
    srv = cluster.servers[:k]
    # every worker pushes to every server at once: the server's ingress is shared
    pairs = [(cluster.devices[r], s) for r in worker_ranks for s in srv]
    rate = cluster.concurrent_rate_Bps(pairs)        # per flow, each flow carries S/k
    alpha = max(cluster.latency_s(a, b) for a, b in pairs[: len(srv)])
    return 2 * (alpha + size_bytes / k / rate)
