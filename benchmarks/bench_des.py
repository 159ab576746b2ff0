"""DES speed: a 1 GiB ring all-reduce over 256 and 1024 ranks (DGX A100 fabric).

Prints, per run, the wall seconds, simpy events processed, events/s, point-to-point
transfers carried (2(n-1) steps × n flows) and the simulated time against the
closed form. ``lockstep`` moves each ring step as one flow group (one rate
computation for all n flows); ``flows`` is the per-flow reference (one simpy flow per
transfer, max-min recomputed at every start and end instant). Both simulate every
rank (full fidelity: a single all-reduce has no replicas to fold).

Targets (2-core machine): 256 ranks under 10 s; 1024 ranks faster than ASTRA-sim's
analytical backend (25-28 s). Measured (shared 2-core machine, load ~1-2): lockstep
256 ranks 0.06 s (5,106 events), 1024 ranks 0.23 s (20,466 events, 2.1M flows);
per-flow reference 256 ranks 10.0 s (919,026 events), 1024 ranks 223 s (14.7M events).

    python benchmarks/bench_des.py            # lockstep 256 and 1024, per-flow 256
    python benchmarks/bench_des.py --quick    # lockstep only
    python benchmarks/bench_des.py --all      # also per-flow 1024 (about 4 minutes)
    python benchmarks/bench_des.py --models   # also whole training steps (lowered scenarios)

``--models`` lowers GPT-3 175B on 1024 A100 (scenarios/gpt3-175b-1024-a100.toml) and
Llama-3 405B on 16,384 H100 (TP8 PP16 DP128, the Llama 3 paper's layout, 2048
sequences per step) into Programs and simulates one step, reduced to one DP replica.
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


LLAMA3_405B = {
    "name": "Llama-3 405B, 16384 x H100, TP8 PP16 DP128 (Llama 3 paper, sec. 3.3)",
    "model": {"preset": "llama3-405b"},
    "training": {"global_batch": 2048, "micro_batch": 1, "precision": "bf16",
                 "optimizer": "adam", "recompute": "selective"},
    "parallel": {"dp": 128, "tp": 8, "pp": 16, "schedule": "1f1b", "sequence_parallel": True,
                 "zero": 1, "stage_layers": [7] + [8] * 14 + [7]},
    "cluster": {"topology": "dgx-h100", "gpu": "h100-sxm-80gb", "nodes": 2048,
                "gpus_per_node": 8},
}


def bench_model(name: str, sc, fidelity: str = "reduced") -> dict:
    import time

    from parsim.parallel.lower import device_view, lower
    from parsim.parallel.workload import step_costs
    from parsim.predict import cluster_for, device_for

    t0 = time.perf_counter()
    cluster = cluster_for(sc)
    costs = step_costs(sc, device_for(sc), cluster)
    prog, replicas = lower(sc, costs, reduce_above_ops=0 if fidelity == "reduced" else float("inf"))
    t_lower = time.perf_counter() - t0
    r = run(prog, device_view(sc, cluster), fidelity=fidelity, replicas=replicas)
    return {"name": name, "ops": len(prog.ops), "lower_s": t_lower, "wall_s": r.wall_s,
            "events": r.events, "step_s": r.step_time_s, "fidelity": r.fidelity,
            "notes": r.notes}


def models():
    from pathlib import Path

    from parsim.scenario import load_scenario, scenario_from_dict

    root = Path(__file__).resolve().parent.parent
    gpt3 = load_scenario(root / "scenarios" / "gpt3-175b-1024-a100.toml")
    llama = scenario_from_dict(LLAMA3_405B, file="bench_des.py:LLAMA3_405B")
    print(f"\n{'step':<28} {'ops':>8} {'lower s':>8} {'DES wall s':>10} {'events':>9} "
          f"{'fidelity':>8} {'simulated step s':>17}")
    for name, sc, fid in [("GPT-3 175B, 1024 A100", gpt3, "full"),
                          ("GPT-3 175B, 1024 A100", gpt3, "reduced"),
                          ("Llama-3 405B, 16384 H100", llama, "reduced")]:
        b = bench_model(name, sc, fid)
        print(f"{b['name']:<28} {b['ops']:>8,} {b['lower_s']:>8.2f} {b['wall_s']:>10.2f} "
              f"{b['events']:>9,} {b['fidelity']:>8} {b['step_s']:>17.4f}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="lockstep runs only")
    ap.add_argument("--all", action="store_true", help="also the per-flow run on 1024 ranks")
    ap.add_argument("--models", action="store_true", help="also simulate whole training steps")
    args = ap.parse_args(argv)
    runs = [(256, "lockstep"), (1024, "lockstep")]
    if not args.quick:
        runs += [(256, "flows")] + ([(1024, "flows")] if args.all else [])
    print(f"{'ranks':>5} {'network':>8} {'wall s':>8} {'events':>10} {'events/s':>10} "
          f"{'flows':>10} {'rates':>6} {'simulated s':>12} {'closed form s':>14}")
    for ranks, network in runs:
        b = bench(ranks, network)
        print(f"{b['ranks']:>5} {b['network']:>8} {b['wall_s']:>8.2f} {b['events']:>10,} "
              f"{b['events_per_s']:>10,.0f} {b['flows']:>10,.0f} {b['rate_computations']:>6} "
              f"{b['sim_s']:>12.6f} {b['closed_form_s']:>14.6f}", flush=True)
    if args.models:
        models()


if __name__ == "__main__":
    main()
