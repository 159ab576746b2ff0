"""Collective algorithms as lock-step steps of point-to-point transfers (timing).

Each function returns the algorithm's steps as ``[(pairs, bytes), ...]``: in one
step every ``(i, j)`` pair sends ``bytes`` from group member ``i`` to member ``j``
at once, and the next step starts when the slowest member has finished. Members
are indices into the group (0..n-1); the parameter server's servers are numbered
after the workers (n..n+k-1). A repeated step reuses one ``pairs`` tuple, so the
engine routes it once.

One source of collective schedules: ring all-reduce, ring reduce-scatter, ring
all-gather and halving-doubling are *derived* from the numerics' schedules
(:mod:`parsim.numerics.comm`, the ones that really reduce chunks of arrays) by
:func:`from_schedule`: round k of the :class:`~parsim.numerics.comm.Schedule` becomes
step k, its messages the ``(src, dst)`` pairs, and a message of c of the schedule's
``n_chunks`` chunks carries ``c/n_chunks · S`` bytes (the largest message of the round
sets the round's bytes). The schedule is looked up when the DES compiles the op, so a
change to a numerics schedule changes the timing too. The binomial tree, chain
broadcast, pairwise all-to-all, hierarchical and parameter-server steps stay here:
the numerics' ``tree_steps`` is a binary tree pipelined over chunks (a parent takes two
children's messages in one round), not the binomial tree whose time the closed form
``tree_all_reduce_s`` gives, and the others have no numerics counterpart to match.

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

from functools import lru_cache

from parsim.numerics import comm as _comm


@lru_cache(maxsize=256)
def _rounds(make, n):
    """``make(n)``'s schedule as [(pairs, fraction of S)] per round, pairs interned."""
    sched = make(n)
    by_round: dict = {}
    for st in sched.steps:
        by_round.setdefault(st.round, []).append(st)
    interned: dict = {}
    out = []
    for r in sorted(by_round):
        msgs = by_round[r]
        pairs = tuple((st.src, st.dst) for st in msgs)
        pairs = interned.setdefault(pairs, pairs)
        out.append((pairs, max(len(st.chunks) for st in msgs) / sched.n_chunks))
    return tuple(out)


def from_schedule(make, n, size_bytes):
    """Lock-step ``[(pairs, bytes)]`` of the numerics schedule ``make(n)`` moving S bytes.

    >>> from parsim.numerics.comm import ring_steps
    >>> from_schedule(ring_steps, 2, 8.0)
    [(((0, 1), (1, 0)), 4.0), (((0, 1), (1, 0)), 4.0)]
    """
    if n <= 1:
        return []
    return [(pairs, size_bytes * frac) for pairs, frac in _rounds(make, n)]


def ring_all_reduce(n, size_bytes):
    """2(n-1) steps of S/n: reduce-scatter then all-gather around the ring
    (``numerics.comm.SCHEDULES["ring"]``)."""
    return from_schedule(_comm.SCHEDULES["ring"], n, size_bytes)


def ring_reduce_scatter(n, size_bytes):
    """(n-1) steps of S/n (``numerics.comm.ring_reduce_scatter_steps``)."""
    return from_schedule(_comm.ring_reduce_scatter_steps, n, size_bytes)


def ring_all_gather(n, size_bytes):
    """(n-1) steps of S/n, S the gathered output (``numerics.comm.ring_all_gather_steps``)."""
    return from_schedule(_comm.ring_all_gather_steps, n, size_bytes)


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
    """Rabenseifner: recursive-halving reduce-scatter, recursive-doubling all-gather
    (``numerics.comm.SCHEDULES["halving_doubling"]``).

    With p = 2^⌊log2 n⌋, r = n - p extra ranks first hand their whole vector to a
    partner and get the result back at the end (one step of S each way).
    """
    return from_schedule(_comm.SCHEDULES["halving_doubling"], n, size_bytes)


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
    ("all_gather", "ring"): ring_all_gather,
    ("broadcast", "ring"): chain_broadcast,
    ("all_to_all", "ring"): pairwise_all_to_all,
}
