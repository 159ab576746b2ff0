"""Rank layout: which global rank holds which (tp, cp, dp, pp) coordinate.

Megatron-LM's default order "tp-cp-ep-dp-pp": tensor-parallel ranks are adjacent
(inside one node), then context, then data, then pipeline stages outermost:

    rank = tp_rank + tp·(cp_rank + cp·(dp_rank + dp·pp_rank))

(Megatron-LM ``parallel_state.RankGenerator``; Narayanan et al. 2021, sec. 3.3:
keep tensor parallelism within a node).
"""
from __future__ import annotations

from ..scenario import ParallelSpec


def rank_of(p: ParallelSpec, tp: int = 0, cp: int = 0, dp: int = 0, pp: int = 0) -> int:
    """Global rank of a coordinate.

    >>> from parsim.scenario import ParallelSpec
    >>> rank_of(ParallelSpec(dp=2, tp=4, pp=2), tp=1, dp=1, pp=1)
    13
    """
    return tp + p.tp * (cp + p.cp * (dp + p.dp * pp))


def tp_group(p: ParallelSpec, cp: int = 0, dp: int = 0, pp: int = 0) -> list[int]:
    return [rank_of(p, t, cp, dp, pp) for t in range(p.tp)]


def cp_group(p: ParallelSpec, tp: int = 0, dp: int = 0, pp: int = 0) -> list[int]:
    return [rank_of(p, tp, c, dp, pp) for c in range(p.cp)]


def dp_group(p: ParallelSpec, tp: int = 0, cp: int = 0, pp: int = 0) -> list[int]:
    return [rank_of(p, tp, cp, d, pp) for d in range(p.dp)]


def dp_cp_group(p: ParallelSpec, tp: int = 0, pp: int = 0) -> list[int]:
    """Ranks that share (and reduce) the same gradients: data and context parallel."""
    return [rank_of(p, tp, c, d, pp) for d in range(p.dp) for c in range(p.cp)]


def pp_group(p: ParallelSpec, tp: int = 0, cp: int = 0, dp: int = 0) -> list[int]:
    return [rank_of(p, tp, cp, dp, s) for s in range(p.pp)]
