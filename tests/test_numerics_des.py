"""Collectives executed through the DES network: same arrays as the reference executor,
times of the closed forms."""
from __future__ import annotations

import numpy as np
import pytest

from parsim.cost.collectives import ring_all_reduce_s
from parsim.numerics import comm as C
from parsim.numerics.des_executor import DesExecutor
from parsim.topology import build_cluster

B, ALPHA = 100e9, 5e-6          # 100 GB/s links, 5 us per hop


def ring_cluster(n):
    return build_cluster({"topology": "ring", "gpus": n, "link_bandwidth": "100 GB/s",
                          "link_latency": "5 us"})


def arrays(n, numel, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(numel) for _ in range(n)]


@pytest.mark.parametrize("n", [2, 4, 8])
def test_des_ring_all_reduce_sums_exactly_in_closed_form_time(n):
    numel = 3 * 1024 * n
    xs = arrays(n, numel)
    ex = DesExecutor(ring_cluster(n))
    got = ex([x.copy() for x in xs], C.ring_steps(n))
    ref = C.apply_steps([x.copy() for x in xs], C.ring_steps(n))
    for g, r in zip(got, ref):
        assert np.array_equal(g, r)                 # bitwise: same order of additions
    np.testing.assert_allclose(got[0], np.sum(xs, axis=0), rtol=1e-12, atol=1e-12)
    want = ring_all_reduce_s(n, numel * 8, B, ALPHA)
    assert ex.total_s == pytest.approx(want, rel=1e-9, abs=0)
    rec = ex.records[-1]
    assert rec["schedule"] == "ring" and rec["rounds"] == 2 * (n - 1)
    assert rec["bytes"] == 2 * (n - 1) * numel * 8


@pytest.mark.parametrize("algorithm", ["tree", "halving_doubling"])
@pytest.mark.parametrize("n", [3, 4, 6])
def test_des_other_all_reduces_match_reference_bitwise(algorithm, n):
    """Tree children reduce into one chunk in one round: applied in step order anyway."""
    xs = arrays(n, 101, seed=n)
    sched = C.SCHEDULES[algorithm](n)
    got = DesExecutor(ring_cluster(n))([x.copy() for x in xs], sched)
    ref = C.apply_steps([x.copy() for x in xs], sched)
    assert all(np.array_equal(g, r) for g, r in zip(got, ref))


def test_des_comm_collectives_and_parameter_server():
    n = 4
    xs = arrays(n, 50, seed=1)
    ref, des = C.Comm(), C.Comm(executor=DesExecutor(ring_cluster(n)))
    for op in ("reduce_scatter", "broadcast"):
        a, b = getattr(ref, op)(xs), getattr(des, op)(xs)
        assert all(np.array_equal(u, v) for u, v in zip(a, b))
    shards = ref.reduce_scatter(xs)
    assert all(np.array_equal(u, v) for u, v in zip(ref.all_gather(shards),
                                                    des.all_gather(shards)))
    ps = build_cluster({"topology": "ps", "nodes": 4, "gpus_per_node": 1, "servers": 2,
                        "nic_bandwidth": "10 Gb/s", "server_bandwidth": "10 Gb/s"})
    ex = DesExecutor(ps)
    upd = lambda j, g: g * 0.5          # noqa: E731
    a = C.Comm().parameter_server(xs, 2, upd)
    b = C.Comm(executor=ex).parameter_server(xs, 2, upd)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert [r["schedule"] for r in ex.records] == ["ps_push", "ps_pull"]
    assert all(r["seconds"] > 0 for r in ex.records)


def test_des_executor_shares_links_between_concurrent_steps():
    """Two workers pushing into one server through its one 10 Gb/s link take twice the
    bandwidth time of one: the steps of a round share the link max-min fairly."""
    ps = build_cluster({"topology": "ps", "nodes": 2, "gpus_per_node": 1, "servers": 1,
                        "nic_bandwidth": "10 Gb/s", "server_bandwidth": "10 Gb/s"})
    size = 10_000
    alpha = ps.latency_s(ps.devices[0], ps.servers[0])
    one = DesExecutor(ps)
    one([np.ones(size), np.zeros(size)], C.ps_push_steps(1, 1))
    two = DesExecutor(ps)
    bufs = two([np.ones(size), np.ones(size), np.zeros(size)], C.ps_push_steps(2, 1))
    assert np.array_equal(bufs[2], np.full(size, 2.0))
    beta = size * 8 / (10e9 / 8)                     # 80 kB at 1.25 GB/s
    assert one.total_s == pytest.approx(alpha + beta, rel=1e-9)
    assert two.total_s == pytest.approx(alpha + 2 * beta, rel=1e-9)


def test_dropped_step_changes_des_time_and_is_caught_by_check(monkeypatch):
    """One source of collective schedules: the timing DES derives its lock-step transfers
    from ``numerics.comm``'s schedules, so dropping one message of a schedule both changes
    the simulated time and breaks the gradient sync that ``run_check`` verifies."""
    from parsim.engines import des_steps
    from parsim.engines.des import run
    from parsim.numerics.check import run_check
    from parsim.program import COLLECTIVE, Program

    n, size = 3, 3.2e7

    def des_time():
        prog = Program(num_ranks=n)
        prog.add(COLLECTIVE, range(n), "dp", "all_reduce hd", coll="all_reduce",
                 algorithm="halving_doubling", size_bytes=size, category="dp")
        return run(prog, ring_cluster(n)).step_time_s

    cfg = {"dp": n, "algorithm": "halving_doubling", "global_batch": 30, "steps": 3}
    good_t = des_time()
    assert run_check(cfg)["exact"]
    real = C.SCHEDULES["halving_doubling"]

    def broken(k):
        s = real(k)
        return C.Schedule(s.name, s.n_ranks, s.n_chunks, s.steps[1:])   # drop rank 0 -> 1

    assert real(n).steps[0] == C.Step(0, 0, 1, (0, 1), "reduce")
    monkeypatch.setitem(C.SCHEDULES, "halving_doubling", broken)
    assert len(des_steps.halving_doubling_all_reduce(n, size)) == real(n).rounds - 1
    bad_t = des_time()
    assert bad_t < good_t - size / B / 2          # a whole round of S fewer on the links
    r = run_check(cfg)
    assert not r["exact"] and r["max_rel_diff"] > 1e-6, r["verdict"]


def test_comm_send_runs_through_the_des_executor():
    """A pipeline send carries the real array over the simulated link and is timed."""
    ex = DesExecutor(ring_cluster(4))
    comm = C.Comm(executor=ex)
    x = np.arange(12.0).reshape(3, 4)
    y = comm.send(x, 1, 2, tag="pp")
    assert np.array_equal(y, x) and y is not x and y.shape == (3, 4)
    rec = ex.records[-1]
    assert rec["schedule"] == "p2p" and rec["bytes"] == x.nbytes
    assert rec["seconds"] == pytest.approx(ALPHA + x.nbytes / B, rel=1e-9)   # one hop
    comm.send(x, 0, 2)                                                       # two hops
    assert ex.records[-1]["seconds"] == pytest.approx(2 * ALPHA + x.nbytes / B, rel=1e-9)
