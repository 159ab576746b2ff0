"""Planner speed: layouts per second of the vectorised closed-form ranking.

    python benchmarks/bench_planner.py            # GPT-3 175B on 1024 A100
    python benchmarks/bench_planner.py --full     # also the default `parsim plan` (DES re-timing)

Prints three figures: the cold pass (per-key closed forms and collective placement
computed for the first time; one process), the warm pass (the same layouts again,
per-key costs cached: the numpy combination alone), and with --full the wall time of
the default search, DES re-timing of the top 20 included. For scale: Calculon's
exhaustive search evaluates 80-115 layouts/s on this kind of machine.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from parsim.planner_grid import Context, Space, evaluate, skeletons  # noqa: E402
from parsim.scenario import load_scenario  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default=str(ROOT / "scenarios/gpt3-175b-1024-a100.toml"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="also time the default `parsim plan`")
    args = ap.parse_args()
    sc = load_scenario(args.scenario)
    space = Space(gpus=(sc.parallel.world,))
    ctx = Context.build(sc, sc.parallel.world)
    sks = skeletons(sc, space)
    t0 = time.perf_counter()
    n = sum(evaluate(ctx, sk, space)["n"] for sk in sks)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        for sk in sks:
            evaluate(ctx, sk, space)
    warm = (time.perf_counter() - t0) / args.repeats
    print(f"{sc.name}: {n:,} layouts in {len(sks)} rank grids")
    print(f"  cold (per-key closed forms + collective placement, 1 process): {cold:6.2f} s "
          f"= {n / cold:>10,.0f} layouts/s")
    print(f"  warm (vectorised ranking, per-key costs cached):               {warm:6.3f} s "
          f"= {n / warm:>10,.0f} layouts/s")
    if args.full:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "parsim", "plan", args.scenario, "--quiet"],
                       check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        print(f"  default `parsim plan` (search + DES re-timing of the top 20): "
              f"{time.perf_counter() - t0:6.1f} s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
