"""Symmetric-replica reduction for the DES: simulate one data-parallel replica.

A *replica* is a connected component of ranks linked by every op except the
data-parallel collectives (category ``dp`` or ``ps``), which are the only ops that
cross replicas. When every replica has the same ranks doing the same ops in the
same order (kinds, streams, durations, sizes, algorithms, local rank pattern,
dependencies), one replica is enough: its ranks run, each of its network ops
carries the same transfer for every replica at once (one lock-step flow group, so
the other replicas' traffic loads the shared links), and the cross-replica
collectives run on their whole group. Every op of another replica then starts and
ends when its counterpart in replica 0 does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parsim.program import COLLECTIVE, Program

CROSS_CATEGORIES = ("dp", "ps")


@dataclass(frozen=True)
class Replicas:
    """How a program folds onto its first replica."""

    count: int                          # R replicas
    ranks: tuple[int, ...]              # ranks of replica 0 (simulated)
    copies: dict                        # rank of replica 0 -> its rank in replica 0..R-1
    op_rep: np.ndarray                  # op id -> the op of replica 0 standing for it
    cross: frozenset                    # ids of cross-replica collectives


def is_cross(op) -> bool:
    """A collective that joins replicas (data-parallel gradient sync or PS)."""
    return op.kind == COLLECTIVE and op.category in CROSS_CATEGORIES


def _components(program: Program) -> list[list[int]]:
    parent = list(range(program.num_ranks))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for op in program.ops:
        if not is_cross(op):
            a = find(op.ranks[0])
            for r in op.ranks[1:]:
                b = find(r)
                if a != b:
                    parent[max(a, b)] = min(a, b)
                    a = min(a, b)
    comps: dict[int, list[int]] = {}
    for r in range(program.num_ranks):
        comps.setdefault(find(r), []).append(r)
    return sorted(comps.values())


def _same(a, b, local_a, local_b) -> bool:
    if (a.kind, a.stream, a.duration_s, a.coll, a.algorithm, a.size_bytes, a.category) != \
            (b.kind, b.stream, b.duration_s, b.coll, b.algorithm, b.size_bytes, b.category):
        return False
    if is_cross(a):
        return a.id == b.id
    return [local_a.get(r) for r in a.ranks] == [local_b.get(r) for r in b.ranks]


def find_replicas(program: Program) -> Replicas | None:
    """Fold the program onto replica 0, or None when it has no symmetric replicas."""
    comps = _components(program)
    if len(comps) < 2 or any(len(c) != len(comps[0]) for c in comps):
        return None
    by_rank: dict[int, dict[str, list[int]]] = {}
    for (q, s), ids in program.streams().items():
        by_rank.setdefault(q, {})[s] = ids
    op_rep = np.arange(len(program.ops))
    locals_ = [{r: i for i, r in enumerate(c)} for c in comps]
    for j, comp in enumerate(comps[1:], start=1):
        for i, r in enumerate(comp):
            rep = comps[0][i]
            mine, theirs = by_rank.get(r, {}), by_rank.get(rep, {})
            if mine.keys() != theirs.keys():
                return None
            for s, ids in mine.items():
                if len(ids) != len(theirs[s]):
                    return None
                for a, b in zip(ids, theirs[s]):
                    if not _same(program.ops[a], program.ops[b], locals_[j], locals_[0]):
                        return None
                    op_rep[a] = b
    for op in program.ops:                     # dependencies must match too
        rep = program.ops[op_rep[op.id]]
        if sorted({int(op_rep[d]) for d in op.deps}) != sorted({int(op_rep[d]) for d in rep.deps}):
            return None
    copies = {r: tuple(c[i] for c in comps) for i, r in enumerate(comps[0])}
    cross = frozenset(op.id for op in program.ops if is_cross(op))
    return Replicas(len(comps), tuple(comps[0]), copies, op_rep, cross)
