"""Scenario → Program: the per-rank ops the discrete-event engine runs.

One program rank stands for each (data-parallel replica d, pipeline stage s):
program rank ``s + pp·d`` is global rank ``ranks.rank_of(p, dp=d, pp=s)``, the one
with tensor- and context-parallel index 0 (:func:`device_view` gives the cluster
seen through that numbering). Its TP/CP peers do the same work at the same time on
their own links, so their collectives are charged inside each micro-batch's
forward and backward (Megatron does not overlap them), with the times
:mod:`parsim.parallel.workload` computed — the same figures the analytical engine
uses, which is what makes the two engines agree where nothing contends. Replicas
are identical, so replica 0 is built once and copied with shifted ranks.

Per stage, in the order of :func:`parsim.engines.schedules.pipeline_order`
(GPipe, 1F1B, interleaved 1F1B): forward and backward of each micro-batch and chunk;
activations and gradients travel between stages as point-to-point sends on a
stream per stage pair. The last backward is split into ``buckets`` pieces and each
piece's gradients are reduced (DP all-reduce, ZeRO reduce-scatter, or PS push/pull)
on the ``dp`` stream as soon as it is done, overlapping the rest of the backward
pass (Megatron --overlap-grad-reduce; PyTorch DDP gradient buckets). Then the
optimizer step, then (ZeRO 1/2) the parameter all-gather.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..engines.des_replicas import Replicas
from ..engines.schedules import pipeline_order
from ..program import COLLECTIVE, COMPUTE, SEND, Op, Program
from ..scenario import Scenario
from . import ranks as rk
from .workload import StepCosts

MAX_BUCKETS = 8


def grad_buckets(costs: StepCosts) -> int:
    """Gradient buckets per stage the lowering (and the closed form) use."""
    return max(1, min(costs.buckets, MAX_BUCKETS))


def device_view(sc: Scenario, cluster):
    """The cluster with ``devices`` renumbered as program ranks (s + pp·d)."""
    p = sc.parallel
    devices = tuple(cluster.devices[rk.rank_of(p, dp=d, pp=s)]
                    for d in range(p.dp) for s in range(p.pp))
    return replace(cluster, devices=devices)


def lower(sc: Scenario, costs: StepCosts, *, reduce_above_ops: float = float("inf")):
    """The whole step of ``sc`` as a Program (see module docstring).

    Returns ``(program, replicas)``. When the full program would exceed
    ``reduce_above_ops`` ops and there are several data-parallel replicas, only
    replica 0 is built, its gradient collectives still span the whole DP group, and
    ``replicas`` (a :class:`~parsim.engines.des_replicas.Replicas`) tells the DES how
    the others fold onto it; otherwise ``replicas`` is None and every rank is there.
    """
    p = sc.parallel
    order = pipeline_order(p.schedule, p.pp, sc.microbatches, p.vpp)
    prog = Program(num_ranks=p.dp * p.pp)
    nb = grad_buckets(costs)
    last0 = _lower_replica(sc, costs, prog, order, nb)
    per_replica = len(prog.ops)
    if p.dp > 1 and per_replica * p.dp > reduce_above_ops:
        cross = [op_id for s in range(p.pp)
                 for op_id in _lower_stage_tail(sc, costs, prog, s, [last0[s]], nb)]
        copies = {s: tuple(s + p.pp * d for d in range(p.dp)) for s in range(p.pp)}
        return prog, Replicas(p.dp, tuple(range(p.pp)), copies, np.arange(len(prog.ops)),
                              frozenset(cross))
    last_pieces = [last0]
    for d in range(1, p.dp):
        _copy_replica(prog, per_replica, d, p.pp)
        last_pieces.append([[i + d * per_replica for i in pcs] for pcs in last0])
    for s in range(p.pp):
        _lower_stage_tail(sc, costs, prog, s, [lp[s] for lp in last_pieces], nb)
    return prog, None


def _copy_replica(prog: Program, n: int, d: int, pp: int) -> None:
    """Append a copy of ops 0..n-1 (replica 0) for replica d: ranks and ids shifted."""
    shift, rshift = d * n, d * pp
    ops = prog.ops
    for op in ops[:n]:
        ops.append(Op(op.id + shift, op.kind, tuple(r + rshift for r in op.ranks), op.stream,
                      op.name, tuple(x + shift for x in op.deps), op.duration_s, op.flops,
                      op.coll, op.algorithm, op.size_bytes, op.category, op.meta))


def _lower_replica(sc, costs, prog, order, nb) -> list[list[int]]:
    """Replica 0's pipeline; returns, per stage, the pieces of its final backward."""
    p, v = sc.parallel, sc.parallel.vpp
    ranks = list(range(p.pp))
    ids: dict = {}
    ptr = [0] * p.pp
    last: list[list[int]] = [[] for _ in range(p.pp)]
    while any(ptr[s] < len(order[s]) for s in range(p.pp)):
        progress = False
        for s in range(p.pp):
            while ptr[s] < len(order[s]):
                phase, mb, c = order[s][ptr[s]]
                vs = c * p.pp + s
                src = vs - 1 if phase == "F" else vs + 1
                prod = (phase, mb, src) if 0 <= src < p.pp * v else \
                    (("F", mb, vs) if phase == "B" else None)
                if prod is not None and prod not in ids:
                    break    # its input is not produced yet: let the other stages advance
                deps = [ids[prod]] if prod is not None else []
                if prod is not None and prod[2] % p.pp != s:
                    a = prod[2] % p.pp
                    deps = [prog.add(SEND, [ranks[a], ranks[s]], f"pp s{a}->s{s}",
                                     f"send {phase} mb{mb} vs{prod[2]}->{vs}", deps=deps,
                                     size_bytes=costs.p2p_bytes, category="pp",
                                     meta=(("microbatch", mb), ("phase", phase)))]
                if phase == "B" and ("F", mb, vs) in ids:
                    deps.append(ids["F", mb, vs])
                final = phase == "B" and ptr[s] == len(order[s]) - 1
                pieces = _pass(prog, costs.chunks[vs], ranks[s], phase, mb, c, deps,
                               nb if final else 1)
                ids[phase, mb, vs] = pieces[-1]
                if final:
                    last[s] = pieces
                ptr[s] += 1
                progress = True
        if not progress:
            raise RuntimeError(f"{p.schedule} schedule deadlocks for p={p.pp}, "
                               f"m={sc.microbatches}, v={v}")
    return last


def _pass(prog, ch, rank, phase, mb, c, deps, split) -> list[int]:
    """Forward or backward of one chunk, its TP communication included (one op: the
    split between the two comes from the costs), in ``split`` equal pieces (the
    final backward, for gradient buckets)."""
    t = ch.fwd_s + ch.tp_fwd_s if phase == "F" else ch.bwd_s + ch.tp_bwd_s
    meta = (("microbatch", mb), ("chunk", c), ("phase", phase))
    label = f"{'fwd' if phase == 'F' else 'bwd'} mb{mb} c{c}"
    pieces = []
    for k in range(split):
        name = label + (f" part{k}" if split > 1 else "")
        op = prog.add(COMPUTE, [rank], "compute", name, deps=deps, duration_s=t / split,
                      flops=ch.fwd_flops * (1 if phase == "F" else 2) / split,
                      category="compute", meta=meta)
        deps = [op]
        pieces.append(op)
    return pieces


def _lower_stage_tail(sc, costs, prog, s, pieces, nb) -> list[int]:
    """Bucketed gradient sync, optimizer step and parameter gather of stage ``s``.

    ``pieces`` holds, for each replica built, the pieces of its final backward (only
    replica 0's when the others are folded); returns the ids of the collectives."""
    p, t = sc.parallel, sc.training
    group = [s + p.pp * d for d in range(p.dp)]
    syncs = []
    if p.dp > 1 or costs.grad_sync_kind == "ps":
        size = costs.params[s] * costs.grad_bytes
        coll = "reduce_scatter" if p.zero >= 1 else "all_reduce"
        alg = costs.grad_sync_algorithm if p.zero == 0 else "ring"
        for k in range(nb):
            ready = k if t.overlap_grad_reduce else -1
            syncs.append(prog.add(COLLECTIVE, group, "dp", f"grad {coll} s{s} bucket{k}",
                                  deps=[pc[ready] for pc in pieces], coll=coll, algorithm=alg,
                                  size_bytes=size / nb, category=costs.grad_sync_kind))
    opts = [prog.add(COMPUTE, [group[d]], "compute", f"optimizer s{s}",
                     deps=syncs + [pc[-1]], duration_s=costs.optimizer_s[s],
                     category="optimizer")
            for d, pc in enumerate(pieces)]
    if costs.param_gather_s[s] > 0 and p.dp > 1:
        syncs.append(prog.add(COLLECTIVE, group, "dp", f"param all_gather s{s}", deps=opts,
                              coll="all_gather", algorithm="ring",
                              size_bytes=costs.params[s] * costs.weight_bytes, category="dp"))
    return syncs
