"""The DES on parsim.topology clusters: closed-form agreement with the cluster's own
alpha and B, and the fabric's max-min rates against Cluster.fair_rates_Bps (an
independent implementation of progressive filling)."""
import numpy as np
import pytest
import simpy

from parsim.cost import collectives as cf
from parsim.engines.des import run
from parsim.engines.network import Fabric
from parsim.engines.schedules import pipeline_program
from parsim.program import COLLECTIVE, COMPUTE, Program
from parsim.topology import build_cluster


def _ring_program(n, size, coll="all_reduce"):
    prog = Program(num_ranks=n)
    prog.add(COLLECTIVE, range(n), "dp", coll, coll=coll, algorithm="ring", size_bytes=size,
             category="dp")
    return prog


@pytest.mark.parametrize("kind", ["ring", "switch"])
@pytest.mark.parametrize("n", [2, 4, 9, 32])
@pytest.mark.parametrize("size", [4e3, 2**30])
@pytest.mark.parametrize("coll", ["all_reduce", "reduce_scatter", "all_gather"])
def test_ring_matches_closed_form_with_cluster_alpha_and_rate(kind, n, size, coll):
    # alpha = neighbour path latency, B = the ring's per-flow rate (concurrent_rate_Bps).
    cl = build_cluster({"topology": kind, "gpus": n, "link_bandwidth": "100 GB/s",
                        "link_latency": "2 us"})
    pairs = [(cl.devices[i], cl.devices[(i + 1) % n]) for i in range(n)]
    alpha, bw = cl.latency_s(*pairs[0]), cl.concurrent_rate_Bps(pairs)
    t = run(_ring_program(n, size, coll), cl).step_time_s
    closed = {"all_reduce": cf.ring_all_reduce_s, "reduce_scatter": cf.ring_reduce_scatter_s,
              "all_gather": cf.ring_all_gather_s}[coll]
    assert t == pytest.approx(closed(n, size, bw, alpha), rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_fabric_rates_equal_cluster_fair_rates_on_an_oversubscribed_fat_tree(seed):
    cl = build_cluster({"topology": "fat_tree", "gpus": 16, "link_bandwidth": "100 GB/s",
                        "link_latency": "1 us", "oversubscription": 4})
    rng = np.random.default_rng(seed)
    pairs = [tuple(cl.devices[i] for i in rng.choice(16, 2, replace=False)) for _ in range(24)]
    fab = Fabric(simpy.Environment(), cl.graph, route=cl.route)
    rates = fab.rates([fab.pathset([pr]) for pr in pairs])
    assert rates.tolist() == pytest.approx(cl.fair_rates_Bps(pairs), rel=1e-9)


def test_auto_fidelity_reduces_large_symmetric_programs():
    # 130 replicas of a 2-stage pipeline = 260 ranks > FULL_FIDELITY_MAX_RANKS.
    dp, m = 130, 2
    prog = Program(num_ranks=2 * dp)
    for j in range(dp):
        one = pipeline_program("1f1b", 2, m, 1, 1e-3, 2e-3, 1e6, stage_ranks=[2 * j, 2 * j + 1])
        base = len(prog.ops)
        for op in one.ops:
            prog.add(op.kind, op.ranks, op.stream, op.name, deps=[d + base for d in op.deps],
                     duration_s=op.duration_s, size_bytes=op.size_bytes, category=op.category)
    for s in range(2):
        prog.add(COLLECTIVE, [2 * j + s for j in range(dp)], "dp", f"dp s{s}", coll="all_reduce",
                 algorithm="ring", size_bytes=1e8, category="dp",
                 deps=[op.id for op in prog.ops if op.kind == COMPUTE and op.ranks[0] % 2 == s])
    cl = build_cluster({"topology": "switch", "gpus": 2 * dp, "link_bandwidth": "50 GB/s",
                        "link_latency": "1 us"})
    auto = run(prog, cl)
    full = run(prog, cl, fidelity="full")
    assert auto.fidelity == "reduced" and "1 of 130 DP replicas" in auto.notes[0]
    assert auto.step_time_s == pytest.approx(full.step_time_s, rel=1e-9)
    assert auto.end_s.tolist() == pytest.approx(full.end_s.tolist(), rel=1e-9)
