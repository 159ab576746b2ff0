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
    g, f = run(P.pipeline_order("gpipe", p, m)), run(P.pipeline_order("1f1b", p, m))
    assert g["ticks"] == f["ticks"] == 2 * (m + p - 1)
    assert g["peak_inflight"] == [m] * p                      # GPipe keeps every micro-batch
    assert f["peak_inflight"] == [min(p - d, m) for d in range(p)]   # 1F1B: p - d


@pytest.mark.parametrize("p,m,v", [(2, 4, 2), (4, 8, 2), (4, 4, 3), (2, 2, 4)])
def test_interleaved_ticks(p, m, v):
    r = run(P.pipeline_order("interleaved", p, m, v), v)
    assert r["ticks"] == 2 * (m * v + p - 1)
    busy = 2 * m * v
    assert (r["ticks"] - busy) / busy == pytest.approx((p - 1) / (v * m))


def test_every_action_runs_once_in_dependency_order():
    p, m, v = 2, 4, 2
    trace = run(P.pipeline_order("interleaved", p, m, v), v)["trace"]
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
    with pytest.raises(ValueError, match="divisible by p = 4"):
        P.pipeline_order("interleaved", 4, 6, 2)


@pytest.mark.parametrize("schedule,pp,vpp", [("gpipe", 2, 1), ("1f1b", 2, 1),
                                             ("interleaved", 2, 2), ("1f1b", 4, 1)])
def test_trainer_runs_exactly_the_timing_pipeline_order(schedule, pp, vpp, monkeypatch):
    """The numerics execute, stage by stage, the very (phase, micro-batch, chunk) sequence
    that the timing DES's ``schedules.pipeline_order`` gives: one source of pipeline order."""
    from parsim.engines.schedules import pipeline_order
    from parsim.numerics import layouts
    from parsim.numerics.check import run_check

    seen = {}
    real_run = layouts.run_schedule

    def spy(order, v, forward, backward, send):
        out = real_run(order, v, forward, backward, send)
        seen.setdefault("orders", []).append(order)
        seen.setdefault("executed", []).append(
            [[(k, mb, s // len(order)) for _, d, k, mb, s in out["trace"] if d == dev]
             for dev in range(len(order))])
        return out

    monkeypatch.setattr(layouts, "run_schedule", spy)
    r = run_check(dict(sizes=(64, 32, 32, 32, 10), pp=pp, vpp=vpp, schedule=schedule,
                       global_batch=32, micro_batch=4, steps=1))
    assert r["exact"], r["verdict"]
    expect = pipeline_order(schedule, pp, 32 // 4, vpp)
    assert seen["orders"] and all(o == expect for o in seen["orders"])
    assert all(e == expect for e in seen["executed"])
