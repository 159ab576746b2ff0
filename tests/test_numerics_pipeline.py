"""Pipeline schedules run in lock-step ticks: makespan and in-flight micro-batches.

With forward and backward of one chunk taking one tick each, GPipe and 1F1B take
2(m + p - 1) ticks, bubble (p-1)/m of the useful time; interleaved with v chunks takes
2(m·v + p - 1) chunk-ticks, bubble (p-1)/(v·m) (Narayanan et al. 2021, §2.2)."""
import pytest

from parsim.numerics import pipeline as P


def run(order, v=1):
    return P.run_schedule(order, v, lambda s, mb, x: 0, lambda s, mb, dy: 0, lambda x, a, b: x)


@pytest.mark.parametrize("p,m", [(2, 4), (4, 8), (4, 4), (3, 6)])
def test_gpipe_and_1f1b_ticks_and_memory(p, m):
    g, f = run(P.gpipe(p, m)), run(P.one_f_one_b(p, m))
    assert g["ticks"] == f["ticks"] == 2 * (m + p - 1)
    assert g["peak_inflight"] == [m] * p                      # GPipe keeps every micro-batch
    assert f["peak_inflight"] == [min(p - d, m) for d in range(p)]   # 1F1B: p - d


@pytest.mark.parametrize("p,m,v", [(2, 4, 2), (4, 8, 2), (4, 4, 3), (2, 2, 4)])
def test_interleaved_ticks(p, m, v):
    r = run(P.interleaved(p, m, v), v)
    assert r["ticks"] == 2 * (m * v + p - 1)
    busy = 2 * m * v
    assert (r["ticks"] - busy) / busy == pytest.approx((p - 1) / (v * m))


def test_every_action_runs_once_in_dependency_order():
    p, m, v = 2, 4, 2
    trace = run(P.interleaved(p, m, v), v)["trace"]
    assert len(trace) == 2 * p * m * v
    when = {(k, mb, s): tick for tick, d, k, mb, s in trace}
    for mb in range(m):
        for s in range(p * v - 1):
            assert when["F", mb, s] < when["F", mb, s + 1]
            assert when["B", mb, s + 1] < when["B", mb, s]


def test_deadlocking_schedule_is_reported():
    bad = [[("B", 0, 0), ("F", 0, 0)], [("F", 0, 0), ("B", 0, 0)]]   # stage 0 waits forever
    with pytest.raises(RuntimeError, match="deadlocks at tick 0"):
        run(bad)


def test_interleaved_needs_m_multiple_of_p():
    with pytest.raises(ValueError, match="multiple of pipeline stages p = 4"):
        P.interleaved(4, 6, 2)
