"""Pipeline-parallel schedules, and an executor that runs them in lock step.

A schedule gives each of ``p`` devices its ordered list of actions ``(kind, mb, chunk)``:
``"F"`` or ``"B"`` of micro-batch ``mb`` on model chunk ``chunk``. With ``v`` chunks per
device the model is cut into ``p·v`` virtual stages and chunk c of device d is virtual
stage ``c·p + d`` (Megatron's interleaving).

* GPipe: all forwards, then all backwards (Huang et al. 2019).
* 1F1B: p-d-1 warm-up forwards, then one forward one backward, then the rest of the
  backwards, so at most p-d micro-batches are in flight on device d (Narayanan et al.
  2019, PipeDream-Flush).
* Interleaved 1F1B: Megatron-LM's order (Narayanan et al. 2021, §2.2; ``schedules.py``):
  forward k runs chunk (k // p) mod v of micro-batch (k // pv)·p + k mod p; warm-up
  2(p-d-1) + (v-1)p forwards; needs m divisible by p.

Bubble fraction (p-1)/m for GPipe and 1F1B, (p-1)/(v·m) interleaved, with forward and
backward of one stage taking one tick each: :func:`run_schedule` counts the ticks.
"""
from __future__ import annotations

from typing import Callable

Action = tuple[str, int, int]       # ("F" | "B", micro-batch, chunk)


def gpipe(p: int, m: int, v: int = 1) -> list[list[Action]]:
    """Every device: F of all micro-batches, then B of all micro-batches."""
    return [[("F", i, 0) for i in range(m)] + [("B", i, 0) for i in range(m)] for _ in range(p)]


def one_f_one_b(p: int, m: int, v: int = 1) -> list[list[Action]]:
    """Warm-up min(p-d-1, m) forwards, steady 1F1B, then cool-down backwards."""
    out = []
    for d in range(p):
        w = min(p - d - 1, m)
        seq = [("F", i, 0) for i in range(w)]
        for i in range(m - w):
            seq += [("F", w + i, 0), ("B", i, 0)]
        seq += [("B", i, 0) for i in range(m - w, m)]
        out.append(seq)
    return out


def interleaved(p: int, m: int, v: int) -> list[list[Action]]:
    """Megatron-LM's interleaved 1F1B over v chunks per device (m % p == 0)."""
    if m % p:
        raise ValueError(f"interleaved schedule: micro-batches m = {m} must be a multiple "
                         f"of pipeline stages p = {p}")
    total = m * v

    def mb(k):
        return (k // (p * v)) * p + k % p

    out = []
    for d in range(p):
        fwd = [("F", mb(k), (k // p) % v) for k in range(total)]
        bwd = [("B", mb(k), v - 1 - (k // p) % v) for k in range(total)]
        w = min(2 * (p - d - 1) + (v - 1) * p, total)
        seq = fwd[:w]
        for i in range(total - w):
            seq += [fwd[w + i], bwd[i]]
        seq += bwd[total - w:]
        out.append(seq)
    return out


SCHEDULES: dict[str, Callable[[int, int, int], list[list[Action]]]] = {
    "gpipe": gpipe, "1f1b": one_f_one_b, "interleaved": interleaved,
}


def run_schedule(order: list[list[Action]], v: int, forward, backward, send) -> dict:
    """Execute ``order`` in lock-step ticks and return {ticks, trace, peak_inflight}.

    Virtual stage s = chunk·p + device. ``forward(s, mb, x) -> y`` (x is None for stage 0;
    the last stage also computes the loss), ``backward(s, mb, dy) -> dx`` (dy is None for
    the last stage), ``send(x, src_device, dst_device) -> x`` moves an activation or a
    gradient between devices. In each tick every device whose next action has its input
    runs it; what it sends arrives for the next tick. A schedule that can make no
    progress raises RuntimeError naming each device's blocked action."""
    p = len(order)
    last = p * v - 1
    fwd_in = {}                       # (stage, mb) -> input activation
    bwd_in = {}                       # (stage, mb) -> output gradient
    done_f = set()
    ptr = [0] * p
    inflight, peak = [0] * p, [0] * p
    trace, tick = [], 0
    while any(ptr[d] < len(order[d]) for d in range(p)):
        ready = []
        for d in range(p):
            if ptr[d] == len(order[d]):
                continue
            kind, mb, c = order[d][ptr[d]]
            s = c * p + d
            if kind == "F" and (s == 0 or (s, mb) in fwd_in):
                ready.append((d, kind, mb, s))
            if kind == "B" and (s, mb) in done_f and (s == last or (s, mb) in bwd_in):
                ready.append((d, kind, mb, s))
        if not ready:
            heads = {d: order[d][ptr[d]] for d in range(p) if ptr[d] < len(order[d])}
            raise RuntimeError(f"pipeline schedule deadlocks at tick {tick}: blocked {heads}")
        arrivals = []
        for d, kind, mb, s in ready:
            if kind == "F":
                y = forward(s, mb, fwd_in.pop((s, mb), None))
                arrivals.append(("done", s, mb, None))
                if s < last:
                    dst = (s + 1) % p
                    arrivals.append(("F", s + 1, mb, send(y, d, dst)))
                inflight[d] += 1
                peak[d] = max(peak[d], inflight[d])
            else:
                dx = backward(s, mb, bwd_in.pop((s, mb), None))
                if s > 0:
                    arrivals.append(("B", s - 1, mb, send(dx, d, (s - 1) % p)))
                inflight[d] -= 1
            trace.append((tick, d, kind, mb, s))
            ptr[d] += 1
        for kind, s, mb, x in arrivals:
            if kind == "done":
                done_f.add((s, mb))
            else:
                (fwd_in if kind == "F" else bwd_in)[(s, mb)] = x
        tick += 1
    return {"ticks": tick, "trace": trace, "peak_inflight": peak}
