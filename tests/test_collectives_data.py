"""Collectives against nccl-tests curves in shared/data/collectives.csv.

Rows used: nccl-tests all_reduce / all_gather / reduce_scatter on dgx/hgx systems with
num_gpus, num_nodes and size stated, size >= 1 MiB, algorithm ring or unstated. In the
file today that is one curve: ``h100_2node_a3mega_ar_*`` (16 H100, 2 nodes, all_reduce,
1 MiB .. 8 GiB; GCP A3 Mega judging by the repository name, links not stated).

Modelled with parsim.cost.placement.group_time_s ("auto") on a 2-node dgx-h100 cluster.
Result (pinned below): the large-message busbw (>= 1 GiB, bandwidth-bound) is within 15 %
(the dgx-h100 NICs carry 0.96 of line rate, the achieved NCCL figure of GTC24 S62129; the
NVLink keeps line rate, as NVLink SHARP reaches it: see parsim/topologies_builtin.py);
the issue's 10 % across the whole curve from 1 MiB is NOT met: below ~512 MiB the
measured curve is latency-bound (~120 us per call even at 8 B, a TCP-based GPUDirect
fabric), while the dgx-h100 preset has InfiniBand latencies of a few us, so the model
overpredicts busbw there by up to ~6x. Pinned so that a change to the fabric model shows.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from parsim.cost import collectives as cc
from parsim.cost import placement
from parsim.topology import build_cluster

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "collectives.csv"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason="shared/data/collectives.csv absent")
MiB, GiB = 2**20, 2**30
OPS = ("all_reduce", "all_gather", "reduce_scatter")


def curve_rows():
    out = []
    for r in csv.DictReader(DATA.open()):
        if (r["system"].startswith(("dgx-", "hgx-")) and r["op"] in OPS
                and r["algorithm"] in ("", "ring") and r["num_gpus"] and r["num_nodes"]
                and r["size_bytes"] and int(r["size_bytes"]) >= MiB
                and "nccl-tests" in r["notes"] and r["busbw_GBps"]):
            out.append(r)
    return out


def predicted_busbw_GBps(r) -> float:
    n, nodes, size = int(r["num_gpus"]), int(r["num_nodes"]), int(r["size_bytes"])
    kind = "dgx-h100" if "h100" in r["system"] else "dgx-a100"
    cluster = build_cluster({"topology": kind, "nodes": nodes, "gpus_per_node": n // nodes})
    t, _ = placement.group_time_s(cluster, list(range(n)), r["op"], size, "auto")
    return cc.busbw_Bps(r["op"], n, size, t) / 1e9


def test_the_curve_is_found():
    rows = curve_rows()
    assert len(rows) == 14
    assert {r["sample_id"].rsplit("_", 1)[0] for r in rows} == {"h100_2node_a3mega_ar"}


def test_bandwidth_bound_sizes_within_15_percent():
    """sizes >= 1 GiB: measured 298..339 GB/s busbw; predicted 287..289 (hierarchical)."""
    for r in curve_rows():
        if int(r["size_bytes"]) >= GiB:
            got, want = predicted_busbw_GBps(r), float(r["busbw_GBps"])
            assert got == pytest.approx(want, rel=0.15), r["sample_id"]


@pytest.mark.parametrize("size,ratio", [(MiB, 4.745), (64 * MiB, 2.674), (512 * MiB, 1.084),
                                        (8 * GiB, 0.852)])
def test_pinned_ratio_predicted_over_measured(size, ratio):
    """Where the model stands today (see module docstring); rel=0.02."""
    r = next(x for x in curve_rows() if int(x["size_bytes"]) == size)
    assert predicted_busbw_GBps(r) / float(r["busbw_GBps"]) == pytest.approx(ratio, rel=0.02)
