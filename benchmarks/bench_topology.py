"""Build and routing speed on a 16,384-GPU DGX H100 cluster (2,048 nodes, 64 SUs).

Run: ``python benchmarks/bench_topology.py``. Prints seconds per step; the targets are a
build well under 1 s and 16k-pair routing / fair-share queries well under 1 s.
"""
import random
import time

from parsim.topology import build_cluster, summarize


def timed(label, fn):
    t0 = time.perf_counter()
    out = fn()
    print(f"{label:<58}{time.perf_counter() - t0:8.3f} s")
    return out


def main():
    c = timed("build dgx-h100, nodes = 2048", lambda: build_cluster(
        {"topology": "dgx-h100", "nodes": 2048}))
    g, d = c.graph, c.devices
    n = len(d)
    print(f"  {n} devices, {g.number_of_nodes()} nodes, {g.number_of_edges()} edges")
    ring = [(d[i], d[(i + 1) % n]) for i in range(n)]
    shift = [(d[i], d[(i + n // 2) % n]) for i in range(n)]
    rng = random.Random(0)
    rand = [(rng.choice(d), rng.choice(d)) for _ in range(n)]
    timed(f"route, {n} ring pairs (uncached)", lambda: [c.route(a, b) for a, b in ring])
    timed(f"route, {n} ring pairs (cached)", lambda: [c.route(a, b) for a, b in ring])
    timed(f"latency_s + bottleneck_Bps, {n} pairs (cached routes)",
          lambda: [(c.latency_s(a, b), c.bottleneck_Bps(a, b)) for a, b in ring])
    r = timed(f"concurrent_rate_Bps, {n} half-shift pairs (uncached)",
              lambda: c.concurrent_rate_Bps(shift))
    print(f"  slowest flow {r / 1e9:.3f} GB/s")
    r = timed(f"concurrent_rate_Bps, {n} random pairs (uncached)",
              lambda: c.concurrent_rate_Bps(rand))
    print(f"  slowest flow {r / 1e9:.3f} GB/s")
    rates = timed(f"fair_rates_Bps (full max-min), {n} random pairs", lambda: c.fair_rates_Bps(rand))
    print(f"  min {min(rates) / 1e9:.3f} GB/s, median {sorted(rates)[n // 2] / 1e9:.3f} GB/s")
    timed("summarize", lambda: summarize(c))


if __name__ == "__main__":
    main()
