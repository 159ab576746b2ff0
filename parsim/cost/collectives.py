"""Closed-form collective costs in the alpha-beta (Hockney) form.

Shared symbols (SI units):

* ``n`` — ranks in the group.
* ``size_bytes`` (S) — the nccl-tests "size": the whole buffer each rank holds
  (all-reduce input, all-gather output, reduce-scatter input, broadcast buffer).
* ``bw_Bps`` (B) — bytes/s one rank can send to its peer in one step while all
  ranks of the step send at once (the per-flow rate on the group's placement).
* ``alpha_s`` (α) — latency paid once per step (path latency plus software).

Each function charges α per step, as the source does, and returns 0 when n = 1.

Sources: R. Thakur, R. Rabenseifner, W. Gropp, "Optimization of Collective
Communication Operations in MPICH", IJHPCA 19(1), 2005 (ring, recursive
halving/doubling, binomial tree); M. Li et al., "Scaling Distributed Machine
Learning with the Parameter Server", OSDI 2014, and Y. Jiang et al., "A Unified
Architecture for Accelerating Distributed DNN Training in Heterogeneous GPU/CPU
Clusters" (BytePS), OSDI 2020 (push/pull bottleneck); nccl-tests
doc/PERFORMANCE.md for algbw/busbw.
"""
from __future__ import annotations

import math


def _log2_ceil(n: int) -> int:
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def ring_all_reduce_s(n: int, size_bytes: float, bw_Bps: float, alpha_s: float) -> float:
    """Ring all-reduce: t = 2(n-1)·α + 2(n-1)/n · S/B (reduce-scatter then all-gather).

    >>> ring_all_reduce_s(8, 1e9, 100e9, 0.0)   # 2·7/8 · 1e9/1e11
    0.0175
    >>> ring_all_reduce_s(4, 4e6, 1e9, 5e-6)    # 6·5us + 1.5·4ms
    0.00603
    """
    if n <= 1:
        return 0.0
    return 2 * (n - 1) * alpha_s + 2 * (n - 1) / n * size_bytes / bw_Bps


def ring_reduce_scatter_s(n: int, size_bytes: float, bw_Bps: float, alpha_s: float) -> float:
    """Ring reduce-scatter: t = (n-1)·α + (n-1)/n · S/B.

    >>> round(ring_reduce_scatter_s(8, 1e9, 100e9, 1e-6), 9)   # 7us + 7/8·10ms
    0.008757
    """
    if n <= 1:
        return 0.0
    return (n - 1) * alpha_s + (n - 1) / n * size_bytes / bw_Bps


def ring_all_gather_s(n: int, size_bytes: float, bw_Bps: float, alpha_s: float) -> float:
    """Ring all-gather: t = (n-1)·α + (n-1)/n · S/B (S is the gathered output).

    >>> ring_all_gather_s(2, 2e9, 1e9, 0.0)
    1.0
    """
    return ring_reduce_scatter_s(n, size_bytes, bw_Bps, alpha_s)


def ring_broadcast_s(n: int, size_bytes: float, bw_Bps: float, alpha_s: float,
                     chunks: int | None = None) -> float:
    """Pipelined chain broadcast of S in c chunks: t = (n-1+c-1)·(α + S/(c·B)).

    With c = 1 this is the store-and-forward chain (n-1)(α + S/B); NCCL pipelines
    many chunks so t → (n-1)·α + S/B. The default c = 64 keeps the bandwidth term
    within (n-2)/64 of S/B.

    >>> round(ring_broadcast_s(2, 1e9, 1e9, 0.0), 6)
    1.0
    """
    if n <= 1:
        return 0.0
    c = chunks or 64
    return (n - 1 + c - 1) * (alpha_s + size_bytes / (c * bw_Bps))


def all_to_all_s(n: int, size_bytes: float, bw_Bps: float, alpha_s: float) -> float:
    """Pairwise-exchange all-to-all: (n-1) steps of S/n each: t = (n-1)·α + (n-1)/n · S/B.

    >>> all_to_all_s(4, 4e9, 1e9, 0.0)
    3.0
    """
    return ring_reduce_scatter_s(n, size_bytes, bw_Bps, alpha_s)


def tree_all_reduce_s(n: int, size_bytes: float, bw_Bps: float, alpha_s: float) -> float:
    """Binomial-tree reduce then broadcast: t = 2·⌈log2 n⌉·(α + S/B).

    Each of the ⌈log2 n⌉ rounds of the reduce moves the whole vector one hop, and
    the broadcast mirrors it (Thakur et al. 2005, sec. 4.4). Latency-optimal,
    bandwidth-poor: ``auto`` picks it for small messages only.

    >>> round(tree_all_reduce_s(8, 1e6, 1e9, 1e-6), 9)   # 2·3·(1us + 1ms)
    0.006006
    """
    if n <= 1:
        return 0.0
    return 2 * _log2_ceil(n) * (alpha_s + size_bytes / bw_Bps)


def halving_doubling_all_reduce_s(n: int, size_bytes: float, bw_Bps: float,
                                  alpha_s: float) -> float:
    """Rabenseifner: recursive-halving reduce-scatter, recursive-doubling all-gather.

    For n = 2^k: t = 2·log2(n)·α + 2(n-1)/n · S/B (Thakur et al. 2005, sec. 4.5).
    Otherwise, with p = 2^⌊log2 n⌋, the r = n - p extra ranks first hand their whole
    vector to a partner and get the result back at the end, adding 2·(α + S/B):
    t = 2·log2(p)·α + 2(p-1)/p · S/B + 2·(α + S/B).

    >>> halving_doubling_all_reduce_s(8, 1e9, 100e9, 0.0)
    0.0175
    >>> halving_doubling_all_reduce_s(4, 4e6, 1e9, 1e-6)   # 4us + 6ms
    0.006004
    """
    if n <= 1:
        return 0.0
    p = 1 << (n.bit_length() - 1)
    t = 2 * math.log2(p) * alpha_s + 2 * (p - 1) / p * size_bytes / bw_Bps
    if p != n:
        t += 2 * (alpha_s + size_bytes / bw_Bps)
    return t


def hierarchical_all_reduce_s(ranks_per_host: int, hosts: int, size_bytes: float,
                              intra_bw_Bps: float, intra_alpha_s: float,
                              inter_bw_Bps: float, inter_alpha_s: float) -> float:
    """Intra-host reduce-scatter, inter-host ring all-reduce of S/g, intra-host all-gather.

    g = ranks_per_host, N = hosts; the g inter-host rings run in parallel, one per
    local rank (one NIC each, as on a rail-optimized fabric):
    t = 2·[(g-1)·α_i + (g-1)/g · S/B_i] + 2(N-1)·α_e + 2(N-1)/N · (S/g)/B_e.

    >>> round(hierarchical_all_reduce_s(8, 2, 8e9, 100e9, 0.0, 10e9, 0.0), 9)   # 2·0.07 + 0.1
    0.24
    """
    g, N = ranks_per_host, hosts
    t_intra = ring_reduce_scatter_s(g, size_bytes, intra_bw_Bps, intra_alpha_s)
    t_inter = ring_all_reduce_s(N, size_bytes / g, inter_bw_Bps, inter_alpha_s)
    return 2 * t_intra + t_inter


def ps_push_pull_s(workers: int, servers: int, size_bytes: float, worker_bw_Bps: float,
                   server_bw_Bps: float, alpha_s: float) -> float:
    """Parameter-server push of gradients then pull of parameters, sharded over k servers.

    Each worker sends S (S/k to each server); each server receives n·S/k, so each
    direction takes α + max(S/B_worker, (n·S/k)/B_server): the server NIC is the
    incast bottleneck once n/k exceeds B_server/B_worker (Li et al. OSDI 2014;
    BytePS, OSDI 2020, sec. 3).

    >>> ps_push_pull_s(8, 1, 1e9, 10e9, 10e9, 0.0)    # 2 · 8e9/1e10
    1.6
    >>> ps_push_pull_s(8, 8, 1e9, 10e9, 10e9, 0.0)    # worker-bound: 2 · 0.1
    0.2
    """
    if workers < 1:
        return 0.0
    one_way = alpha_s + max(size_bytes / worker_bw_Bps,
                            workers * size_bytes / servers / server_bw_Bps)
    return 2 * one_way


# (op, algorithm) -> function(n, S, B, α). Hierarchical and PS need the placement
# and live in parsim.cost.placement.
FLAT = {
    ("all_reduce", "ring"): ring_all_reduce_s,
    ("all_reduce", "tree"): tree_all_reduce_s,
    ("all_reduce", "halving_doubling"): halving_doubling_all_reduce_s,
    ("reduce_scatter", "ring"): ring_reduce_scatter_s,
    ("all_gather", "ring"): ring_all_gather_s,
    ("broadcast", "ring"): ring_broadcast_s,
    ("all_to_all", "ring"): all_to_all_s,
}

# nccl-tests busbw factors (doc/PERFORMANCE.md): busbw = algbw · factor(n).
BUSBW_FACTOR = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
}


def algbw_Bps(size_bytes: float, time_s: float) -> float:
    """nccl-tests algorithm bandwidth S/t.

    >>> algbw_Bps(1e9, 0.5)
    2000000000.0
    """
    return size_bytes / time_s if time_s > 0 else math.inf


def busbw_Bps(op: str, n: int, size_bytes: float, time_s: float) -> float:
    """nccl-tests bus bandwidth: algbw · 2(n-1)/n for all-reduce, (n-1)/n for
    reduce-scatter / all-gather / all-to-all, 1 for broadcast.

    >>> busbw_Bps("all_reduce", 8, 1e9, 0.0175)   # the ring at B = 100 GB/s
    100000000000.0
    """
    return algbw_Bps(size_bytes, time_s) * BUSBW_FACTOR[op](n)
