"""``parsim validate``: compare predictions with published (or local) runs.

    parsim validate --published ../shared/data/published_runs.csv
    parsim validate --published runs.csv --json
    parsim validate --published runs.csv --plot validation.png
    parsim validate --local [DIR] [--profile P.toml] [--quick]

Prints one line per predicted run (measured, predicted, error), the mean and worst
absolute percentage error per source and overall, and every skipped row with its reason.
"""
from __future__ import annotations

import importlib
import json
import math

from ..errors import ScenarioError


def add_arguments(parser) -> None:
    parser.add_argument("--published", metavar="FILE.csv",
                        help="published runs in the shared/data/published_runs.csv format")
    parser.add_argument("--local", metavar="DIR", nargs="?", const="",
                        help="run real jobs on this machine and compare (DIR, if given, "
                             "receives local_runs.json)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="PNG", help="draw predicted vs measured (log axes)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    try:
        from .local import add_arguments as add_local_arguments
    except ImportError:
        return
    add_local_arguments(parser)


def run(args) -> int:
    if getattr(args, "local", None) is not None:
        return run_local(args)
    if not args.published:
        raise ScenarioError("give --published FILE.csv (or --local DIR)", key="validate")
    from .published import validate_published
    report = validate_published(args.published)
    if args.plot:
        plot(report, args.plot)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(format_table(report))
    return 0


def run_local(args) -> int:
    """Hook for validation against local measurements (``parsim.validate.local``)."""
    try:
        local = importlib.import_module("parsim.validate.local")
    except ImportError:
        raise ScenarioError("not available in this build (parsim.validate.local is missing); "
                            "use --published FILE.csv", key="--local") from None
    return local.run(args)


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1f} %"


def format_table(report) -> str:
    """The validation table: rows, skipped rows, per-source and overall errors."""
    w = max([len(r.run_id) for r in report.rows] + [3])
    lines = [f"{'run':<{w}}  {'measured':>10}  {'predicted':>10}  {'error':>8}"]
    for r in report.rows:
        lines.append(f"{r.run_id:<{w}}  {r.measured_s:>9.3f}s  {r.predicted_s:>9.3f}s  "
                     f"{r.error_pct:>+7.1f}%")
    lines.append("")
    lines.append(f"{'source':<22}  {'rows':>4}  {'mean |err|':>10}  {'worst |err|':>11}")
    for s, (n, mean, worst) in report.by_source().items():
        lines.append(f"{s:<22}  {n:>4}  {_pct(mean):>10}  {_pct(worst):>11}")
    lines.append(f"{'overall':<22}  {len(report.rows):>4}  {_pct(report.mean_abs_pct_error):>10}  "
                 f"{_pct(report.max_abs_pct_error):>11}")
    if report.skipped:
        lines.append("")
        lines.append(f"skipped ({len(report.skipped)}):")
        lines.extend(f"  {s.run_id}: {s.reason}" for s in report.skipped)
    return "\n".join(lines)


def plot(report, path: str) -> None:
    """Predicted vs measured step time on log axes with the line y = x; written atomically."""
    from ..report.plots import finish_parity
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 6))
    groups: dict = {}
    for r in report.rows:
        groups.setdefault(r.source, []).append(r)
    for source, rows in groups.items():
        ax.scatter([r.measured_s for r in rows], [r.predicted_s for r in rows], label=source, s=18)
    finish_parity(fig, ax, (v for r in report.rows for v in (r.measured_s, r.predicted_s)),
                  unit="s", path=path,
                  title=f"published runs: mean |err| {_pct(report.mean_abs_pct_error)}, "
                        f"worst {_pct(report.max_abs_pct_error)}")
