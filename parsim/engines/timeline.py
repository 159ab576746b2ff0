"""Timelines of a DES run: Chrome trace-event JSON and a matplotlib Gantt chart.

``write_chrome_trace`` writes the Trace Event Format (one complete event ``"ph": "X"``
per op and rank; ``pid`` = rank, ``tid`` = stream; times in microseconds) that
chrome://tracing and https://ui.perfetto.dev open. ``draw_timeline`` draws one row
per (rank, stream) with one colour per category. Both write atomically.
"""
from __future__ import annotations

import json
import math

from parsim.atomic import write_via
from parsim.engines.des import CATEGORIES, category

COLOURS = {"compute": "#4c72b0", "dp": "#dd8452", "tp": "#55a868", "pp": "#c44e52",
           "ps": "#8172b3", "optimizer": "#937860"}


def chrome_trace_events(des_result, program) -> list[dict]:
    """Trace-event dicts: one slice per (op, rank), plus process/thread names."""
    events, tracks = [], set()
    for op in program.ops:
        t0, t1 = des_result.start_s[op.id], des_result.end_s[op.id]
        if not (math.isfinite(t0) and math.isfinite(t1)):
            continue
        args = {"category": category(op), **{str(k): v for k, v in op.meta}}
        if op.size_bytes:
            args["size_bytes"] = op.size_bytes
        for r in op.ranks:
            tracks.add((r, op.stream))
            events.append({"name": op.name, "cat": category(op), "ph": "X", "pid": r,
                           "tid": op.stream, "ts": t0 * 1e6, "dur": (t1 - t0) * 1e6,
                           "args": args})
    for r in sorted({r for r, _ in tracks}):
        events.append({"name": "process_name", "ph": "M", "pid": r, "args": {"name": f"rank {r}"}})
    for r, s in sorted(tracks):
        events.append({"name": "thread_name", "ph": "M", "pid": r, "tid": s, "args": {"name": s}})
    return events


def write_chrome_trace(des_result, program, path) -> None:
    """Write the run as Chrome trace-event JSON to ``path``."""
    doc = {"traceEvents": chrome_trace_events(des_result, program), "displayTimeUnit": "ms",
           "otherData": {"step_time_s": des_result.step_time_s,
                         "fidelity": des_result.fidelity, "notes": list(des_result.notes)}}

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(doc, f)
    write_via(path, write)


def draw_timeline(des_result, program, path_png, *, max_rows: int = 64) -> None:
    """Gantt chart of the run: one row per (rank, stream), colours by category."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = sorted({(r, op.stream) for op in program.ops for r in op.ranks})[:max_rows]
    row_of = {key: i for i, key in enumerate(rows)}
    bars: dict = {}
    for op in program.ops:
        t0, t1 = des_result.start_s[op.id], des_result.end_s[op.id]
        for r in op.ranks:
            i = row_of.get((r, op.stream))
            if i is not None and math.isfinite(t0):
                bars.setdefault(category(op), []).append((i, t0, t1 - t0))
    fig, ax = plt.subplots(figsize=(12, 1.0 + 0.3 * len(rows)))
    for cat, items in bars.items():   # one call per (category, row): fast for 100k ops
        by_row: dict = {}
        for i, t0, dur in items:
            by_row.setdefault(i, []).append((t0 * 1e3, dur * 1e3))
        for i, spans in by_row.items():
            ax.broken_barh(spans, (i - 0.4, 0.8), facecolors=COLOURS.get(cat, "#999999"))
    ax.set_yticks(range(len(rows)), [f"rank {r} {s}" for r, s in rows])
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.set_title(f"step {des_result.step_time_s * 1e3:.3f} ms ({des_result.fidelity} fidelity)")
    ax.legend(handles=[Patch(color=COLOURS.get(c, "#999999"), label=c)
                       for c in CATEGORIES if c in bars], loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    write_via(path_png, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
