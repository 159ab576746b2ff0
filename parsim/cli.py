"""``parsim`` command line: argparse subcommands, nothing else.

Every user mistake surfaces as one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import ParsimError


def _predict(args) -> int:
    from .predict import predict
    from .report.text import render
    from .scenario import load_scenario
    sc = load_scenario(args.file, args.set)
    opts = {"fidelity": args.fidelity} if args.fidelity else {}
    if args.trace or args.timeline:
        if args.engine == "analytical" or sc.model.kind == "collective":
            raise ParsimError("--trace and --timeline need the DES engine and a training "
                              "scenario", key="--trace")
        opts["keep"] = True
    pred = predict(sc, engine=args.engine, profile=args.profile, **opts)
    if args.trace or args.timeline:
        from .engines import timeline
        pred, des_result, program = pred
        if args.trace:
            timeline.write_chrome_trace(des_result, program, args.trace)
        if args.timeline:
            timeline.draw_timeline(des_result, program, args.timeline)
    if args.json:
        print(json.dumps(pred.to_json(), indent=2, default=_jsonable))
    else:
        print(render(pred))
    return 0


def _jsonable(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, tuple):
        return list(x)
    return str(x)


def _topo(args) -> int:
    from .topology import build_cluster, draw, summarize
    from .scenario import apply_override
    table: dict = {"topology": args.name}
    for text in args.set or []:
        apply_override(table, text if "." not in text.split("=")[0] else text.split(".", 1)[1])
    cluster = build_cluster(table, file=None)
    print(summarize(cluster))
    if args.png:
        draw(cluster, args.png)
        print(f"wrote {args.png}")
    return 0


def _lazy(module: str, attr: str = "run"):
    def handler(args):
        import importlib
        return getattr(importlib.import_module(module), attr)(args)
    return handler


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="parsim", description="Predict step time, memory and the best layout "
                 "of distributed deep-learning training.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("predict", help="predict step time, breakdown and memory of a scenario")
    p.add_argument("file", help="scenario .toml")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a key, VALUE in TOML syntax (repeatable)")
    p.add_argument("--engine", default="auto", help="auto | analytical | des")
    p.add_argument("--profile", help="calibrated hardware profile .toml")
    p.add_argument("--fidelity", choices=("auto", "full", "reduced"),
                   help="DES: simulate every rank (full) or one symmetric replica (reduced)")
    p.add_argument("--trace", metavar="OUT.json", help="write a Chrome trace (DES)")
    p.add_argument("--timeline", metavar="OUT.png", help="draw a Gantt chart (DES)")
    p.set_defaults(func=_predict)

    t = sub.add_parser("topo", help="summarise a topology and optionally draw it")
    t.add_argument("name", help="built-in kind, file in topologies/, or a path")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="topology parameter, e.g. nodes=2 or gpus=8")
    t.add_argument("--png", help="draw the graph to this PNG")
    t.set_defaults(func=_topo)

    for name, module, helptext in (
            ("check", "parsim.numerics.cli", "train serially and in parallel; compare"),
            ("calibrate", "parsim.calibrate.cli", "measure this machine into a profile"),
            ("validate", "parsim.validate.cli", "compare predictions with real runs"),
            ("plan", "parsim.planner_cli", "search layouts and cluster sizes"),
            ("report", "parsim.report.cli", "write a report with plots")):
        try:
            import importlib
            mod = importlib.import_module(module)
        except ImportError:
            continue
        c = sub.add_parser(name, help=helptext)
        mod.add_arguments(c)
        c.set_defaults(func=_lazy(module))
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return args.func(args) or 0
    except ParsimError as err:
        print(f"parsim: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
