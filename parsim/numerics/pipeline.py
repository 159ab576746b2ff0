"""Pipeline-parallel execution of the timing model's pipeline orders, in lock step.

The per-device orders come from :func:`parsim.engines.schedules.pipeline_order`, the
same function that builds the timing DES's pipeline Program, so the numerics and the
timing run one schedule: device d gets its ordered list of actions ``(kind, mb, chunk)``,
``"F"`` or ``"B"`` of micro-batch ``mb`` on model chunk ``chunk``. With ``v`` chunks per
device the model is cut into ``p·v`` virtual stages and chunk c of device d is virtual
stage ``c·p + d`` (Megatron's interleaving). See ``schedules.py`` for GPipe, 1F1B and
interleaved 1F1B.

Bubble fraction (p-1)/m for GPipe and 1F1B, (p-1)/(v·m) interleaved, with forward and
backward of one stage taking one tick each: :func:`run_schedule` counts the ticks.
"""
from __future__ import annotations

from parsim.engines.schedules import SCHEDULES, pipeline_order

Action = tuple[str, int, int]       # ("F" | "B", micro-batch, chunk)

__all__ = ["Action", "SCHEDULES", "pipeline_order", "run_schedule"]


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
