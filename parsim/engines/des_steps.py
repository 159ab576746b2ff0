"""Collective algorithms as lock-step steps of point-to-point transfers (timing only).

Each function returns the algorithm's steps as ``[(pairs, bytes), ...]``: in one
step every ``(i, j)`` pair sends ``bytes`` from group member ``i`` to member ``j``
at once, and the next step starts when the slowest member has finished. Members
are indices into the group (0..n-1); the parameter server's servers are numbered
after the workers (n..n+k-1). A repeated step reuses one ``pairs`` tuple, so the
engine routes it once.

Each schedule moves exactly the bytes of its closed form in
:mod:`parsim.cost.collectives` (same step count, same bytes per step), so with one
rate B and one latency α per step the DES time equals the closed form. Source:
Thakur, Rabenseifner, Gropp, "Optimization of Collective Communication Operations
in MPICH", IJHPCA 19(1), 2005; Li et al., OSDI 2014 (parameter server).

>>> [(p, b) for p, b in ring_all_reduce(3, 3e6)][:1]
[(((0, 1), (1, 2), (2, 0)), 1000000.0)]
>>> len(ring_all_reduce(8, 1.0)), len(halving_doubling_all_reduce(8, 1.0))
(14, 6)
"""
from __future__ import annotations


def _ring(n):
    return tuple((i, (i + 1) % n) for i in range(n))


def ring_all_reduce(n, size_bytes):
    """2(n-1) steps of S/n: reduce-scatter then all-gather around the ring."""
    ring = _ring(n)
    return [(ring, size_bytes / n)] * (2 * (n - 1)) if n > 1 else []


def ring_reduce_scatter(n, size_bytes):
    """(n-1) steps of S/n (also the ring all-gather, S the gathered output)."""
    ring = _ring(n)
    return [(ring, size_bytes / n)] * (n - 1) if n > 1 else []


def chain_broadcast(n, size_bytes, chunks=64):
    """Pipelined chain 0 -> 1 -> ... -> n-1 in c chunks: n-1+c-1 steps of S/c.

    In step s the link i -> i+1 carries chunk s - i when 0 <= s - i < c.
    """
    if n <= 1:
        return []
    return [(tuple((i, i + 1) for i in range(n - 1) if 0 <= s - i < chunks), size_bytes / chunks)
            for s in range(n - 1 + chunks - 1)]


def pairwise_all_to_all(n, size_bytes):
    """(n-1) steps of S/n: in step k member i sends to (i + k) mod n."""
    return [(tuple((i, (i + k) % n) for i in range(n)), size_bytes / n) for k in range(1, n)]


def tree_all_reduce(n, size_bytes):
    """Binomial-tree reduce to member 0, then the mirrored broadcast: 2·⌈log2 n⌉ steps of S.

    >>> tree_all_reduce(4, 1.0)
    [(((1, 0), (3, 2)), 1.0), (((2, 0),), 1.0), (((0, 2),), 1.0), (((0, 1), (2, 3)), 1.0)]
    """
    rounds = []
    d = 1
    while d < n:
        rounds.append(tuple((i, i - d) for i in range(d, n, 2 * d)))
        d *= 2
    reduce = [(r, float(size_bytes)) for r in rounds]
    bcast = [(tuple((j, i) for i, j in r), float(size_bytes)) for r in reversed(rounds)]
    return reduce + bcast


def halving_doubling_all_reduce(n, size_bytes):
    """Rabenseifner: recursive-halving reduce-scatter, recursive-doubling all-gather.

    With p = 2^⌊log2 n⌋, members p..n-1 first hand their vector to member i - p and
    get the result back at the end (one step of S each way).
    """
    if n <= 1:
        return []
    p = 1 << (n.bit_length() - 1)
    extra = tuple((p + j, j) for j in range(n - p))
    halving = []
    d, part = p // 2, size_bytes / 2
    while d >= 1:
        halving.append((tuple((i, i ^ d) for i in range(p)), part))
        d, part = d // 2, part / 2
    steps = ([(extra, float(size_bytes))] if extra else []) + halving + halving[::-1]
    if extra:
        steps.append((tuple((j, i) for i, j in extra), float(size_bytes)))
    return steps


def hierarchical_all_reduce(hosts, size_bytes):
    """Intra-host ring reduce-scatter, g inter-host rings on S/g, intra-host all-gather.

    ``hosts[i]`` is the host of member i; every host must hold g members. The
    inter-host rings join the l-th member of every host (one ring per local index).

    >>> [(len(p), b) for p, b in hierarchical_all_reduce([0, 0, 1, 1], 4.0)]
    [(4, 2.0), (4, 1.0), (4, 1.0), (4, 2.0)]
    """
    by_host: dict = {}
    for i, h in enumerate(hosts):
        by_host.setdefault(h, []).append(i)
    local = list(by_host.values())
    g, n_hosts = len(local[0]), len(local)
    if any(len(m) != g for m in local):
        raise ValueError(f"hierarchical all-reduce needs the same ranks on every host, "
                         f"got {sorted(len(m) for m in local)}")
    intra = tuple((m[l], m[(l + 1) % g]) for m in local for l in range(g)) if g > 1 else ()
    inter = tuple((local[h][l], local[(h + 1) % n_hosts][l])
                  for l in range(g) for h in range(n_hosts)) if n_hosts > 1 else ()
    rs = [(intra, size_bytes / g)] * (g - 1) if g > 1 else []
    ar = [(inter, size_bytes / g / n_hosts)] * (2 * (n_hosts - 1)) if n_hosts > 1 else []
    return rs + ar + rs


def ps_push_pull(n, k, size_bytes):
    """Push S/k from every worker to every server, then pull it back (2 steps)."""
    push = tuple((i, n + j) for i in range(n) for j in range(k))
    return [(push, size_bytes / k), (tuple((j, i) for i, j in push), size_bytes / k)]


STEPS = {
    ("all_reduce", "ring"): ring_all_reduce,
    ("all_reduce", "tree"): tree_all_reduce,
    ("all_reduce", "halving_doubling"): halving_doubling_all_reduce,
    ("reduce_scatter", "ring"): ring_reduce_scatter,
    ("all_gather", "ring"): ring_reduce_scatter,
    ("broadcast", "ring"): chain_broadcast,
    ("all_to_all", "ring"): pairwise_all_to_all,
}
