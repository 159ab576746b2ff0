"""DES speed: a 1 GiB ring all-reduce over 256 and 1024 ranks (DGX A100 fabric).

Prints, per run, the wall seconds, simpy events processed, events/s, point-to-point
transfers carried (2(n-1) steps × n flows) and the simulated time against the
closed form. ``lockstep`` moves each ring step as one flow group (one rate
computation for all n flows); ``flows`` is the per-flow reference (one simpy flow per
transfer, max-min recomputed at every start and end instant). Both simulate every
rank (full fidelity: a single all-reduce has no replicas to fold).

Targets (2-core machine): 256 ranks under 10 s; 1024 ranks faster than ASTRA-sim's
analytical backend (25-28 s).

    python benchmarks/bench_des.py            # 256 and 1024, both network modes
    python benchmarks/bench_des.py --quick    # lockstep only
"""
from __future__ import annotations

import argparse

from parsim.cost.collectives import ring_all_reduce_s
from parsim.engines.des import run
from parsim.program import COLLECTIVE, Program
from parsim.topology import build_cluster

SIZE_BYTES = 2**30


def bench(ranks: int, network: str) -> dict:
    cluster = build_cluster({"topology": "dgx-a100", "nodes": ranks // 8})
    prog = Program(num_ranks=ranks)
    prog.add(COLLECTIVE, range(ranks), "dp", "all_reduce 1 GiB", coll="all_reduce",
             algorithm="ring", size_bytes=SIZE_BYTES, category="dp")
    r = run(prog, cluster, fidelity="full", network=network)
    ring = [(cluster.devices[i], cluster.devices[(i + 1) % ranks]) for i in range(ranks)]
    alpha = max(cluster.latency_s(a, b) for a, b in ring)
    closed = ring_all_reduce_s(ranks, SIZE_BYTES, cluster.concurrent_rate_Bps(ring), alpha)
    return {"ranks": ranks, "network": network, "wall_s": r.wall_s, "events": r.events,
            "events_per_s": r.events / r.wall_s, "flows": r.flows,
            "rate_computations": r.rate_computations, "sim_s": r.step_time_s,
            "closed_form_s": closed}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="lockstep runs only")
    args = ap.parse_args(argv)
    runs = [(256, "lockstep"), (1024, "lockstep")]
    if not args.quick:
        runs += [(256, "flows"), (1024, "flows")]
    print(f"{'ranks':>5} {'network':>8} {'wall s':>8} {'events':>10} {'events/s':>10} "
          f"{'flows':>10} {'rates':>6} {'simulated s':>12} {'closed form s':>14}")
    for ranks, network in runs:
        b = bench(ranks, network)
        print(f"{b['ranks']:>5} {b['network']:>8} {b['wall_s']:>8.2f} {b['events']:>10,} "
              f"{b['events_per_s']:>10,.0f} {b['flows']:>10,.0f} {b['rate_computations']:>6} "
              f"{b['sim_s']:>12.6f} {b['closed_form_s']:>14.6f}", flush=True)


if __name__ == "__main__":
    main()
