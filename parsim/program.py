"""The Program: per-rank operations with dependencies and streams.

Every engine consumes this one form. A scenario is *lowered* (``parsim.parallel``)
into a Program; the analytical engine, the discrete-event engine and the numerics
executor each run it their own way, keeping their state in their own dicts.

Semantics
---------
* An :class:`Op` runs on one or more ranks (``ranks``): one rank for compute, the
  whole group for a collective, ``(src, dst)`` for a point-to-point transfer.
* Each rank has named streams (``"compute"``, ``"comm"``, ``"tp"``, ``"pp"``, ...).
  Ops on one (rank, stream) run in program order, one at a time, like CUDA streams
  and NCCL communicators.
* An op starts when every op in ``deps`` is finished and it is at the head of the
  stream on every rank it runs on (a collective waits for all of its group).
* ``duration_s`` is the cost of a compute op, fixed at lowering time from the cost
  model so every engine charges the same figure. Communication ops carry sizes;
  their time depends on the engine (closed form, or flows on the graph).

Ops are frozen; ``id`` equals the op's index in ``Program.ops``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

COMPUTE = "compute"      # a kernel (or fused group of kernels) on one rank
COLLECTIVE = "collective"  # all_reduce, reduce_scatter, all_gather, broadcast, all_to_all
SEND = "send"            # point-to-point transfer ranks[0] -> ranks[1]

COLLECTIVE_OPS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "all_to_all")


@dataclass(frozen=True)
class Op:
    """One operation of the program (see module docstring for semantics)."""

    id: int
    kind: str                      # COMPUTE | COLLECTIVE | SEND
    ranks: tuple[int, ...]         # executing ranks; (src, dst) for SEND
    stream: str                    # stream name on each of those ranks
    name: str                      # human label: "fwd L3 mb2", "dp all_reduce bucket 4"
    deps: tuple[int, ...] = ()     # op ids that must finish first
    duration_s: float = 0.0        # COMPUTE: time charged by every engine
    flops: float = 0.0             # COMPUTE: for reporting only
    coll: str = ""                 # COLLECTIVE: one of COLLECTIVE_OPS
    algorithm: str = ""            # COLLECTIVE: ring | tree | halving_doubling | hierarchical | ps
    size_bytes: float = 0.0        # COLLECTIVE: bytes per rank (nccl-tests "size"); SEND: bytes
    category: str = ""             # breakdown bucket: compute | dp | tp | pp | ps | optimizer
    meta: tuple = ()               # (key, value) pairs: layer, microbatch, chunk, phase


@dataclass
class Program:
    """Ops in program order plus what the engines need to know about ranks."""

    ops: list[Op] = field(default_factory=list)
    num_ranks: int = 0
    # Symmetric-replica reduction: the program holds `num_ranks` ranks, each standing
    # for `replicas` identical ranks of the real job (e.g. one DP replica of 128).
    replicas: int = 1
    notes: list[str] = field(default_factory=list)

    def add(self, kind, ranks, stream, name, deps=(), **kw) -> int:
        """Append an op and return its id."""
        op = Op(id=len(self.ops), kind=kind, ranks=tuple(ranks), stream=stream, name=name,
                deps=tuple(deps), **kw)
        self.ops.append(op)
        return op.id

    def streams(self) -> dict[tuple[int, str], list[int]]:
        """Op ids per (rank, stream), in program order."""
        out: dict[tuple[int, str], list[int]] = {}
        for op in self.ops:
            for r in op.ranks:
                out.setdefault((r, op.stream), []).append(op.id)
        return out
