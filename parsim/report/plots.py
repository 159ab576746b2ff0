"""Report figures (matplotlib, Agg): breakdown, memory, scaling, Pareto. Written atomically."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..atomic import write_via  # noqa: E402
from ..errors import ScenarioError  # noqa: E402

COLOURS = {"compute": "#4c72b0", "bubble": "#c7c7c7", "tp": "#55a868", "pp": "#c44e52",
           "dp": "#dd8452", "ps": "#8172b3", "optimizer": "#937860", "params": "#4c72b0",
           "grads": "#55a868", "activations": "#dd8452"}


def save_figure(fig, path, key: str = "--plot") -> None:
    """Write ``fig`` to ``path`` atomically (temp file + rename) and close it."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        plt.close(fig)
        raise ScenarioError("directory does not exist", file=str(path), key=key)
    try:
        fig.tight_layout()
        write_via(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


def finish_parity(fig, ax, values, *, unit: str, title: str, path) -> None:
    """Complete a predicted-against-measured plot: log axes spanning ``values`` (both
    coordinates of every point) with margin, the y = x line, labels, legend; save it."""
    values = list(values) or [1.0, 10.0]
    lo, hi = min(values) / 1.5, max(values) * 1.5
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="y = x")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), title=title,
           xlabel=f"measured step time ({unit})", ylabel=f"predicted step time ({unit})")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def breakdown(pred, path) -> None:
    """One stacked bar: compute, bubble, exposed communication per dimension, optimizer."""
    parts = [("compute", pred.breakdown_s["compute"]), ("bubble", pred.breakdown_s["bubble"])]
    parts += [(k, v) for k, v in pred.comm_s.items() if v > 0]
    parts.append(("optimizer", pred.breakdown_s["optimizer"]))
    fig, ax = plt.subplots(figsize=(8, 2.2))
    left = 0.0
    for name, v in parts:
        label = name if name in ("compute", "bubble", "optimizer") else f"comm {name}"
        ax.barh([0], [v], left=left, color=COLOURS.get(name, "#999999"), label=f"{label} {v:.3g} s")
        left += v
    ax.set_yticks([])
    ax.set_xlabel("seconds per step")
    ax.set_title(f"{pred.name}: {pred.step_time_s:.3f} s/step ({pred.engine})", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=4, fontsize=8, frameon=False)
    save_figure(fig, path)


def memory(stages: dict, capacity: float, path, title: str = "") -> None:
    """Stacked bytes per pipeline stage against the device capacity."""
    n = len(next(iter(stages.values())))
    fig, ax = plt.subplots(figsize=(8, 3.2))
    bottom = [0.0] * n
    for name, vals in stages.items():
        gib = [v / 2**30 for v in vals]
        ax.bar(range(n), gib, bottom=bottom, color=COLOURS.get(name, "#999999"), label=name)
        bottom = [b + g for b, g in zip(bottom, gib)]
    ax.axhline(capacity / 2**30, color="black", linestyle="--", label=f"capacity {capacity / 2**30:.0f} GiB")
    ax.set_xlabel("pipeline stage")
    ax.set_ylabel("GiB per device")
    ax.set_title(title or "memory per device", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    save_figure(fig, path)


def scaling(points: list[dict], path, title: str = "") -> None:
    """Strong scaling: best step time and its MFU against GPU count (global batch fixed)."""
    gpus = [p["gpus"] for p in points]
    step = [p["step_time_s"] for p in points]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.loglog(gpus, step, "o-", label="best layout")
    a.loglog(gpus, [step[0] * gpus[0] / g for g in gpus], ":", color="grey", label="linear scaling")
    a.set_xlabel("GPUs")
    a.set_ylabel("step time (s)")
    a.legend(fontsize=8)
    b.semilogx(gpus, [100 * p["mfu"] for p in points], "o-", color="#dd8452")
    b.set_xlabel("GPUs")
    b.set_ylabel("MFU (%)")
    b.set_ylim(0, 100)
    fig.suptitle(title or "strong scaling", fontsize=9)
    save_figure(fig, path)


def pareto(points: list[dict], layouts: list[dict], path, title: str = "") -> None:
    """Step time against GPUs: the best per size, the frontier, and the top layouts."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.scatter([r["gpus"] for r in layouts], [r["step_time_s"] for r in layouts], s=12,
               color="#c7c7c7", label="top layouts")
    front = [p for p in points if p["frontier"]]
    ax.plot([p["gpus"] for p in front], [p["step_time_s"] for p in front], "o-", color="#c44e52",
            label="Pareto frontier")
    other = [p for p in points if not p["frontier"]]
    if other:
        ax.scatter([p["gpus"] for p in other], [p["step_time_s"] for p in other], marker="x",
                   color="black", label="dominated")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("GPUs")
    ax.set_ylabel("step time (s)")
    ax.set_title(title or "step time against GPUs", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)
