"""``parsim plan FILE``: search layouts (and cluster sizes), print the best.

    parsim plan scenarios/gpt3-175b-1024-a100.toml                 # this cluster
    parsim plan scenarios/gpt3-175b-1024-a100.toml --gpus 256:4096 # 256, 512, ... 4096
    parsim plan FILE --objective cost --top 5 --json
    parsim plan FILE --out results.jsonl        # rerun after an interruption: resumes
    parsim plan FILE --dask tcp://scheduler:8786
"""
from __future__ import annotations

import json
import os

from .errors import ParsimError
from .planner import OBJECTIVES, describe, plan
from .planner_grid import RECOMPUTE, SCHEDULES, Space
from .report.text import fmt_bytes, fmt_time


def parse_gpus(text: str) -> tuple[int, ...]:
    """``1024``; ``256:4096`` (doubling); ``256:1024:256`` (step); ``64,128,512``.

    >>> parse_gpus("256:2048")
    (256, 512, 1024, 2048)
    >>> parse_gpus("8:32:8")
    (8, 16, 24, 32)
    """
    try:
        if "," in text:
            out = [int(x) for x in text.split(",")]
        elif ":" in text:
            parts = [int(x) for x in text.split(":")]
            if len(parts) == 2:
                lo, hi = parts
                out = []
                while lo <= hi:
                    out.append(lo)
                    lo *= 2
            elif len(parts) == 3:
                out = list(range(parts[0], parts[1] + 1, parts[2]))
            else:
                raise ValueError
        else:
            out = [int(text)]
    except ValueError:
        raise ParsimError(f"{text!r}: give N, LO:HI (doubling), LO:HI:STEP or N,N,...",
                          key="--gpus") from None
    if not out or min(out) < 1:
        raise ParsimError(f"{text!r}: GPU counts must be positive", key="--gpus")
    return tuple(sorted(set(out)))


def _ints(key):
    def parse(text):
        try:
            return tuple(int(x) for x in text.split(","))
        except ValueError:
            raise ParsimError(f"{text!r}: give comma-separated integers, e.g. 1,2,4", key=key) from None
    return parse


def _choices(key, allowed):
    def parse(text):
        vals = tuple(text.split(","))
        bad = [v for v in vals if v not in allowed]
        if bad:
            raise ParsimError(f"{bad[0]!r} is not accepted; one of: {', '.join(allowed)}", key=key)
        return vals
    return parse


def add_arguments(p) -> None:
    p.add_argument("file", help="scenario .toml (its model, training and cluster)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a scenario key")
    p.add_argument("--gpus", help="cluster sizes: N, LO:HI (doubling), LO:HI:STEP or N,N,...")
    p.add_argument("--objective", default="time", choices=OBJECTIVES,
                   help="time: step time; cost: GPU-hours per step (× cluster.price_per_gpu_hour)")
    p.add_argument("--top", type=int, default=10, help="layouts to print (default 10)")
    p.add_argument("--retime", type=int, default=20, metavar="K",
                   help="re-time the best K with the discrete-event engine (default 20; 0: none)")
    p.add_argument("--retime-budget", type=float, default=20.0, metavar="SECONDS",
                   help="stop starting DES re-timings after this long (default 20)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="local worker processes (default: one per CPU)")
    p.add_argument("--dask", metavar="ADDRESS", help="run on a Dask distributed scheduler")
    p.add_argument("--out", metavar="FILE.jsonl",
                   help="append each finished chunk; a rerun skips what is there")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--tp", help="tensor-parallel sizes to try (default: divisors of heads)")
    p.add_argument("--pp", help="pipeline sizes to try (default: divisors of layers)")
    p.add_argument("--cp", default="1", help="context-parallel sizes to try (default 1)")
    p.add_argument("--micro-batch", help="micro-batch sizes (default: divisors up to 16)")
    p.add_argument("--zero", default="0,1,2,3", help="ZeRO stages (default 0,1,2,3)")
    p.add_argument("--recompute", default=",".join(RECOMPUTE), help="recompute modes")
    p.add_argument("--schedule", default=",".join(SCHEDULES), help="pipeline schedules")
    p.add_argument("--tp-across-nodes", action="store_true",
                   help="let TP span nodes (default: within a node)")


def space_from_args(args, sc) -> Space:
    gpus = parse_gpus(args.gpus) if args.gpus else (sc.parallel.world,)
    return Space(
        gpus=gpus, tp=_ints("--tp")(args.tp) if args.tp else None,
        pp=_ints("--pp")(args.pp) if args.pp else None, cp=_ints("--cp")(args.cp),
        micro_batch=_ints("--micro-batch")(args.micro_batch) if args.micro_batch else None,
        zero=_ints("--zero")(args.zero), recompute=_choices("--recompute", RECOMPUTE)(args.recompute),
        schedules=_choices("--schedule", SCHEDULES)(args.schedule),
        tp_across_nodes=args.tp_across_nodes)


def run(args) -> int:
    from .calibrate.progress import Progress
    from .scenario import load_scenario
    sc = load_scenario(args.file, args.set)
    space = space_from_args(args, sc)
    if args.top < 1 or args.retime < 0 or args.workers < 1:
        raise ParsimError("--top and --workers must be >= 1, --retime >= 0", key="--top")
    progress = Progress("plan", 1, enabled=not args.quiet)
    res = plan(sc, space, objective=args.objective, top=args.top, retime=args.retime,
               retime_budget_s=args.retime_budget, workers=args.workers, dask=args.dask,
               out=args.out, progress=progress)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(render(res))
    return 0


def render(res: dict) -> str:
    """The plan as text: summary, table of the best layouts, Pareto, explanation."""
    inf = res["infeasible"]
    why = ", ".join(f"{n:,} by {k}" for k, n in inf["by_largest_part"].items() if n)
    lines = [f"{res['scenario']}: {res['evaluated']:,} layouts on "
             f"{', '.join(map(str, res['gpus']))} x {res['device']} in {res['seconds']:.1f} s "
             f"({res['chunks']['run']} chunks run, {res['chunks']['resumed']} resumed)",
             f"  {inf['count']:,} do not fit in memory" + (f" (largest part: {why})" if why else ""),
             f"  {res['retime']['note']}", "",
             table(res["layouts"], res["objective"]), ""]
    if len(res["pareto"]) > 1:
        lines.append("best per GPU count (* on the Pareto frontier of step time vs GPUs):")
        for p in res["pareto"]:
            lines.append(f"  {'*' if p['frontier'] else ' '} {p['gpus']:>6} GPUs  "
                         f"{fmt_time(p['step_time_s']):>10}  MFU {p['mfu']:5.1%}  "
                         f"{describe({**p, 'microbatches': 0})}")
        lines.append("")
    lines.append(res["explanation"])
    return "\n".join(lines)


def table(layouts: list[dict], objective: str = "time") -> str:
    head = (f"{'#':>3} {'GPUs':>5} {'layout':<52} {'step':>10} {'DES step':>10} {'MFU':>6} "
            f"{'memory':>10} {'exp.comm':>10} {'bubble':>10}"
            + (f" {'GPU-h/step':>10}" if objective == "cost" else ""))
    rows = [head, "-" * len(head)]
    for r in layouts:
        des = fmt_time(r["des_step_time_s"]) if "des_step_time_s" in r else "-"
        rows.append(f"{r['rank']:>3} {r['gpus']:>5} {describe(r):<52} {fmt_time(r['step_time_s']):>10} "
                    f"{des:>10} {r['mfu']:6.1%} {fmt_bytes(r['memory_bytes']):>10} "
                    f"{fmt_time(r['exposed_comm_s']):>10} {fmt_time(r['bubble_s']):>10}"
                    + (f" {r['gpu_hours_per_step']:10.4f}" if objective == "cost" else ""))
    return "\n".join(rows)
