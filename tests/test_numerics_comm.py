"""Collectives run chunk by chunk: results, step counts and bytes against Thakur et al. 2005."""
import numpy as np
import pytest

from parsim.numerics import comm as C

ALGS = ["ring", "tree", "halving_doubling"]


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 12])
def test_all_reduce_sums_and_agrees_bitwise(alg, n):
    rng = np.random.default_rng(n)
    xs = [rng.standard_normal((5, 7)) for _ in range(n)]      # 35 elements: uneven chunks
    out = C.Comm(alg).all_reduce(xs)
    np.testing.assert_allclose(out[0], np.sum(xs, axis=0), rtol=1e-13, atol=1e-14)
    assert all(np.array_equal(o, out[0]) for o in out)       # every rank, same bits
    assert out[0].shape == (5, 7)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
def test_round_counts_are_the_alpha_terms(n):
    """Ring 2(n-1) rounds; halving-doubling 2·log2(p) (+2 when n is not a power of two)."""
    assert C.ring_steps(n).rounds == 2 * (n - 1)
    p = 1 << (n.bit_length() - 1)
    extra = 0 if p == n else 2
    assert C.halving_doubling_steps(n).rounds == 2 * int(np.log2(p)) + extra
    assert C.ring_reduce_scatter_steps(n).rounds == n - 1
    assert C.broadcast_steps(n).rounds == int(np.ceil(np.log2(n)))


@pytest.mark.parametrize("n", [2, 4, 8])
def test_bytes_per_rank_match_bandwidth_terms(n):
    """Ring and halving-doubling each send 2(n-1)/n · S per rank (power-of-two n, n | size)."""
    S = 64 * 8                                                 # 64 float64 elements
    for alg in ("ring", "halving_doubling"):
        c = C.Comm(alg)
        c.all_reduce([np.ones(64)] * n)
        assert c.log[0]["bytes"] / n == 2 * (n - 1) / n * S
    c = C.Comm()
    c.reduce_scatter([np.ones(64)] * n)
    assert c.log[0]["bytes"] / n == (n - 1) / n * S


def test_ring_schedule_for_three_ranks():
    """Round k: rank r adds chunk (r-k-1) mod 3 into rank r+1, then the all-gather copies."""
    s = C.ring_steps(3)
    assert s.steps[:3] == (C.Step(0, 0, 1, (2,), "reduce"), C.Step(0, 1, 2, (0,), "reduce"),
                           C.Step(0, 2, 0, (1,), "reduce"))
    assert s.steps[6:9] == (C.Step(2, 0, 1, (0,), "copy"), C.Step(2, 1, 2, (1,), "copy"),
                            C.Step(2, 2, 0, (2,), "copy"))


@pytest.mark.parametrize("alg", ALGS)
def test_any_order_allowed_by_step_deps_gives_the_same_sum(alg):
    """The DES may run steps as soon as their deps are delivered: emulate a random order."""
    n, rng = 6, np.random.default_rng(7)
    sched = C.SCHEDULES[alg](n)
    xs = [rng.standard_normal(50) for _ in range(n)]
    deps = C.step_deps(sched)
    bounds = C.chunk_bounds(50, sched.n_chunks)
    bufs = [x.copy() for x in xs]
    started, delivered, inflight = set(), set(), []
    while len(delivered) < len(sched.steps):
        ready = [i for i in range(len(sched.steps))
                 if i not in started and set(deps[i]) <= delivered]
        for i in rng.permutation(ready)[: max(1, len(ready) // 2)]:
            inflight.append((i, C.read_payload(bufs, sched.steps[i], bounds)))
            started.add(int(i))
        k = rng.integers(len(inflight))
        i, payload = inflight.pop(k)
        C.deliver(bufs, sched.steps[i], payload, bounds)
        delivered.add(int(i))
    for b in bufs:
        np.testing.assert_allclose(b, np.sum(xs, axis=0), rtol=1e-13, atol=1e-14)


def test_dropped_ring_step_is_caught():
    """A ring missing one message leaves one chunk short of one rank's contribution."""
    n = 4
    good = C.ring_steps(n)
    broken = C.Schedule("ring", n, n, good.steps[1:])
    xs = [np.full(8, float(r + 1)) for r in range(n)]          # sum = 10 everywhere
    out = C.apply_steps([x.copy() for x in xs], broken)
    assert not all(np.array_equal(o, np.full(8, 10.0)) for o in out)
    # step 0 carried rank 0's part of chunk 3 (elements 6, 7): the rank-0 value 1 is lost
    assert out[0][6] == 9.0 and out[0][0] == 10.0


def test_reduce_scatter_all_gather_broadcast_send():
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(10) for _ in range(3)]
    c = C.Comm()
    shards = c.reduce_scatter(xs)
    assert [len(s) for s in shards] == [4, 3, 3]               # np.array_split sizes
    np.testing.assert_allclose(np.concatenate(shards), np.sum(xs, 0), rtol=1e-14)
    full = c.all_gather(shards)
    assert all(np.array_equal(f, np.concatenate(shards)) for f in full)
    b = c.broadcast(xs, root=2)
    assert all(np.array_equal(a, xs[2]) for a in b)
    y = c.send(xs[0], 0, 1, tag="pp")
    assert np.array_equal(y, xs[0]) and y is not xs[0]
    assert [e["op"] for e in c.log] == ["reduce_scatter", "all_gather", "broadcast", "send"]
    with pytest.raises(ValueError, match="shard sizes"):
        c.all_gather([np.ones(2), np.ones(5)])


def test_parameter_server_sums_on_servers_and_workers_pull():
    xs = [np.arange(6.0) * (r + 1) for r in range(3)]          # sum = 6 · arange
    seen = []

    def server_update(j, gsum):
        seen.append((j, gsum.copy()))
        return gsum / 3                                        # the server averages

    c = C.Comm()
    out = c.parameter_server(xs, 2, server_update)
    assert [j for j, _ in seen] == [0, 1]
    np.testing.assert_array_equal(seen[1][1], [18.0, 24.0, 30.0])
    assert all(np.array_equal(o, 2 * np.arange(6.0)) for o in out)
    # incast: 3 workers push all 6 elements and pull them back, 8 bytes each
    assert c.bytes_by_tag() == {"ps": 2 * 3 * 6 * 8}


def test_on_step_hook_sees_every_message():
    seen = []
    c = C.Comm("ring", on_step=lambda step, payload: seen.append((step, payload[0].size)))
    c.all_reduce([np.ones(12)] * 4)
    assert len(seen) == 2 * 3 * 4 and all(size == 3 for _, size in seen)
    assert [s for s, _ in seen] == list(C.ring_steps(4).steps)
