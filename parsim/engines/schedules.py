"""Pipeline schedules: per-stage order of forward and backward passes.

``pipeline_order(schedule, p, m, v)`` gives, for each of the p stages, the list of
``("F" | "B", microbatch, chunk)`` it runs in order:

* ``gpipe``: all m forwards, then all m backwards (Huang et al., NeurIPS 2019).
* ``1f1b``: stage s runs min(p-s-1, m) warm-up forwards, then alternates one
  forward and one backward, then drains the backwards (PipeDream-Flush; Narayanan
  et al., SC 2021, sec. 2.2.1).
* ``interleaved``: each stage holds v model chunks (virtual stage c·p + s); forwards
  go through the chunks in groups of p microbatches, backwards the chunks in reverse;
  warm-up (p-s-1)·2 + (v-1)·p (Megatron-LM ``forward_backward_pipelining_with_
  interleaving``; Narayanan et al. 2021, sec. 2.2.2). Needs m divisible by p.

Bubble fraction with forward and backward times t_f, t_b per microbatch and stage:
(p-1)/m for GPipe and 1F1B, (p-1)/(v·m) interleaved (Narayanan et al. 2021, eqs. 1-2).

>>> pipeline_order("1f1b", 2, 3)[0]
[('F', 0, 0), ('F', 1, 0), ('B', 0, 0), ('F', 2, 0), ('B', 1, 0), ('B', 2, 0)]
"""
from __future__ import annotations

from parsim.program import COMPUTE, SEND, Program

SCHEDULES = ("gpipe", "1f1b", "interleaved")


def pipeline_order(schedule: str, p: int, m: int, v: int = 1) -> list[list[tuple[str, int, int]]]:
    """Per-stage op order for a pipeline schedule (see module docstring)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule = {schedule!r}: must be one of {', '.join(SCHEDULES)}")
    if schedule != "interleaved" and v != 1:
        raise ValueError(f"schedule = {schedule!r} has one chunk per stage, got v = {v}")
    if schedule == "interleaved" and m % p:
        raise ValueError(f"interleaved 1F1B needs microbatches m = {m} divisible by p = {p}")
    return [_stage_order(schedule, s, p, m, v) for s in range(p)]


def _stage_order(schedule, s, p, m, v):
    if schedule == "gpipe":
        return [("F", i, 0) for i in range(m)] + [("B", i, 0) for i in range(m)]
    total = m * v

    def fwd(k):
        return ("F", (k // (p * v)) * p + k % p, (k % (p * v)) // p if v > 1 else 0)

    def bwd(k):
        _, mb, c = fwd(k)
        return ("B", mb, v - 1 - c)

    warmup = min((p - s - 1) * 2 + (v - 1) * p if v > 1 else p - s - 1, total)
    order = [fwd(k) for k in range(warmup)]
    for i in range(total - warmup):
        order += [fwd(warmup + i), bwd(i)]
    order += [bwd(k) for k in range(total - warmup, total)]
    return order


def pipeline_program(schedule: str, p: int, m: int, v: int, t_f_s: float, t_b_s: float,
                     act_bytes: float = 0.0, stage_ranks=None) -> Program:
    """A pipeline-only Program: stage s on rank ``stage_ranks[s]`` (default s).

    ``t_f_s``/``t_b_s`` are one microbatch's forward/backward time on one stage (each
    chunk takes 1/v of it); activations and gradients of ``act_bytes`` are sent
    between stages on a stream per stage pair (``"pp s0->s1"``), named by stage so
    that every data-parallel replica has the same streams.
    """
    ranks = list(stage_ranks) if stage_ranks is not None else list(range(p))
    orders = pipeline_order(schedule, p, m, v)
    prog = Program(num_ranks=max(ranks) + 1)
    ids: dict = {}
    ptr = [0] * p
    while any(ptr[s] < len(orders[s]) for s in range(p)):
        progress = False
        for s in range(p):
            while ptr[s] < len(orders[s]):
                phase, mb, c = orders[s][ptr[s]]
                vs = c * p + s
                src_vs = vs - 1 if phase == "F" else vs + 1
                if 0 <= src_vs < p * v:
                    prod = (phase, mb, src_vs)
                elif phase == "B":
                    prod = ("F", mb, vs)       # the last virtual stage turns around
                else:
                    prod = None
                if prod is not None and prod not in ids:
                    break
                deps = [ids[prod]] if prod is not None else []
                if prod is not None and prod[2] % p != s:
                    a, b = ranks[prod[2] % p], ranks[s]
                    deps = [prog.add(SEND, [a, b], f"pp s{prod[2] % p}->s{s}",
                                     f"send {phase} mb{mb} vs{prod[2]}->{vs}", deps=deps,
                                     size_bytes=act_bytes, category="pp",
                                     meta=(("microbatch", mb), ("phase", phase)))]
                if phase == "B" and ("F", mb, vs) in ids:
                    deps.append(ids["F", mb, vs])
                t = (t_f_s if phase == "F" else t_b_s) / v
                ids[phase, mb, vs] = prog.add(
                    COMPUTE, [ranks[s]], "compute", f"{phase} mb{mb} c{c}", deps=deps,
                    duration_s=t, category="compute",
                    meta=(("microbatch", mb), ("chunk", c), ("phase", phase)))
                ptr[s] += 1
                progress = True
        if not progress:
            raise RuntimeError(f"{schedule} schedule deadlocks for p={p}, m={m}, v={v}")
    return prog
