"""Every parallel layout trains exactly like one device (float64, 10 steps, rel 1e-12).

Relative difference of a tensor: max|θ_par − θ_ser| / max|θ_ser|, worst over tensors and
steps. Only the order of floating-point sums differs between layouts, a few ulps per step,
so 1e-12 is ~4 decades above what correct layouts reach and ~10 decades below a bug."""
import math

import numpy as np
import pytest

from parsim.errors import Infeasible, ScenarioError
from parsim.numerics import comm as C
from parsim.numerics.check import run_check

DEEP = (64, 32, 32, 32, 10)      # 4 layers, so 2 stages × 2 chunks have a layer each
LN10 = math.log(10)

GRID = {
    "dp2 ring": dict(dp=2),
    "dp4 ring adam": dict(dp=4, optimizer="adam", lr=1e-2),
    "dp4 tree": dict(dp=4, algorithm="tree"),
    "dp3 tree": dict(dp=3, algorithm="tree", global_batch=30),
    "dp4 halving-doubling": dict(dp=4, algorithm="halving_doubling"),
    "dp3 halving-doubling": dict(dp=3, algorithm="halving_doubling", global_batch=30),
    "dp4 ps sync, 2 servers": dict(dp=4, grad_sync="ps", ps_servers=2),
    "dp2 ps sync adam": dict(dp=2, grad_sync="ps", optimizer="adam", lr=1e-2),
    "tp2": dict(tp=2),
    "tp4 adam": dict(tp=4, optimizer="adam", lr=1e-2),
    "pp2 gpipe": dict(sizes=DEEP, pp=2, schedule="gpipe", micro_batch=4),
    "pp2 1f1b": dict(sizes=DEEP, pp=2, schedule="1f1b", micro_batch=4),
    "pp2 interleaved vpp2": dict(sizes=DEEP, pp=2, vpp=2, schedule="interleaved", micro_batch=4),
    "zero1": dict(dp=2, zero=1, optimizer="adam", lr=1e-2),
    "zero2": dict(dp=2, zero=2, optimizer="adam", lr=1e-2),
    "zero3": dict(dp=4, zero=3, optimizer="adam", lr=1e-2, algorithm="tree"),
    "zero3 sgd": dict(dp=2, zero=3),
    "dp2×tp2×pp2": dict(sizes=DEEP, dp=2, tp=2, pp=2, micro_batch=4),
    "dp2×tp2×pp2 interleaved zero1": dict(sizes=DEEP, dp=2, tp=2, pp=2, vpp=2,
                                          schedule="interleaved", micro_batch=4, zero=1,
                                          optimizer="adam", lr=1e-2),
}


@pytest.mark.parametrize("name", GRID)
def test_layout_matches_serial(name):
    r = run_check({**GRID[name], "steps": 10})
    assert r["exact"], r["verdict"]
    assert r["max_rel_diff"] <= 1e-12 and r["tolerance"] == 1e-12
    assert r["replicas_identical"]
    np.testing.assert_allclose(r["loss_parallel"], r["loss_serial"], rtol=1e-12)
    assert r["loss_serial"][-1] < r["loss_serial"][0]
    assert "computes what one device computes" in r["verdict"]


@pytest.mark.parametrize("cfg", [
    dict(tp=2, optimizer="adam", lr=1e-2),
    dict(dp=2, tp=2, pp=2, micro_batch=2, optimizer="adam", lr=1e-2),
    dict(pp=2, vpp=2, schedule="interleaved", micro_batch=2, zero=3, dp=2),
], ids=["tp2", "dp2×tp2×pp2", "pp2 interleaved × zero3"])
def test_transformer_layouts_match_serial(cfg):
    """Attention heads and MLP split by TP, blocks split by PP (4 blocks: embed, 2 layers, head)."""
    r = run_check({"model": "lm", "global_batch": 8, "steps": 10, **cfg})
    assert r["exact"], r["verdict"]
    assert len(r["per_tensor"]) == 35


def test_big_mlp_1000_500_100():
    """The article's network size (550,600 parameters); 3 steps keep the test short."""
    r = run_check(dict(sizes=(1000, 500, 100), dp=2, tp=2, algorithm="halving_doubling",
                       global_batch=8, steps=3))
    assert r["exact"], r["verdict"]
    assert r["loss_serial"][0] == pytest.approx(r["loss_parallel"][0], rel=1e-12)


def test_async_ps_is_not_serial_but_still_trains():
    cfg = dict(dp=4, grad_sync="ps", ps_mode="async", staleness=2, global_batch=64, lr=0.3,
               steps=100)
    r = run_check(cfg)
    assert not r["exact"] and r["max_rel_diff"] > 1e-3
    gap = np.array(r["loss_parallel"]) - np.array(r["loss_serial"])
    assert gap[0] == pytest.approx(0.0, abs=1e-12)   # step 0: every worker has version 0
    assert np.mean(np.abs(gap)) > 1e-3
    assert np.mean(r["loss_parallel"][-10:]) < 0.6 * LN10     # still converges
    assert "staleness 2" in r["verdict"] and "gap" in r["verdict"]
    # staleness 0 is synchronous SGD again
    assert run_check({**cfg, "staleness": 0, "steps": 10})["exact"]


def test_article_sum_rule_diverges_while_averaging_trains():
    cfg = dict(dp=2, global_batch=64, lr=0.3, steps=100)
    avg = run_check(cfg)
    assert avg["exact"]
    assert np.mean(avg["loss_parallel"][-10:]) < 0.5 * LN10          # well below ln 10
    bad = run_check({**cfg, "sync_rule": "sum_params"})
    lp = bad["loss_parallel"]
    assert not bad["exact"]
    assert lp[0] == pytest.approx(avg["loss_parallel"][0], rel=1e-12)  # same start
    assert not math.isfinite(lp[-1]) or lp[-1] > 1e6 * lp[0]          # it explodes
    assert "(N+1)" in bad["verdict"] and "(1/N)" in bad["verdict"]


def test_sum_of_gradients_takes_n_times_the_step():
    r = run_check(dict(dp=4, sync_rule="sum_grads"))
    assert not r["exact"] and "N = 4 times" in r["verdict"]
    # equals averaging with 4× the learning rate
    ref = run_check(dict(lr=0.4))
    np.testing.assert_allclose(r["loss_parallel"], ref["loss_serial"], rtol=1e-12)


def test_broken_ring_is_caught():
    def drop_first_step(bufs, sched, on_step):
        if sched.name == "ring" and sched.steps:
            sched = C.Schedule(sched.name, sched.n_ranks, sched.n_chunks, sched.steps[1:])
        return C.apply_steps(bufs, sched, on_step)

    r = run_check(dict(dp=4, steps=10), executor=drop_first_step)
    assert not r["exact"] and r["max_rel_diff"] > 1e-6
    assert "does NOT compute" in r["verdict"] and "after step 0" in r["verdict"]


def test_zero_memory_per_rank():
    """MLP 64-32-10 has 2410 parameters; Adam keeps 2 state elements per parameter."""
    P = 64 * 32 + 32 + 32 * 10 + 10
    want = {0: (P, P, 2 * P), 1: (P, P, P), 2: (P, P // 2, P), 3: (P // 2, P // 2, P)}
    for zero, (params, grads, opt) in want.items():
        r = run_check(dict(dp=2, zero=zero, optimizer="adam", lr=1e-2, steps=1))
        for rank in (0, 1):
            assert r["memory_elems"][rank] == {"params": params, "grads": grads,
                                               "optimizer": opt}, zero


def test_traffic_by_kind():
    r = run_check(dict(sizes=DEEP, dp=2, tp=2, pp=2, micro_batch=4, steps=1))
    assert set(r["bytes_by_tag"]) == {"dp", "tp", "pp"}
    m = 32 // 2 // 4                            # global batch 32, dp 2, micro-batch 4
    assert r["ticks"] == 2 * (m + 2 - 1)
    # pp: per replica and micro-batch, a (4, 32) float64 activation goes forward and its
    # gradient comes back, once per TP rank: dp · m · 2 directions · tp · 4·32·8 bytes
    assert r["bytes_by_tag"]["pp"] == 2 * m * 2 * 2 * (4 * 32 * 8)


def test_float32_matches_within_float32_tolerance():
    r = run_check(dict(dp=2, tp=2, dtype="float32"))
    assert r["exact"] and r["tolerance"] == 1e-5 and r["max_rel_diff"] > 0


def test_config_errors_name_the_key():
    with pytest.raises(ScenarioError, match=r"numerics.algoritm: unknown key; did you mean 'algorithm'"):
        run_check(dict(algoritm="ring"))
    with pytest.raises(ScenarioError, match=r"numerics.schedule: 'zb': expected one of"):
        run_check(dict(schedule="zb"))
    with pytest.raises(ScenarioError, match="numerics.vpp: vpp = 2 needs schedule = 'interleaved'"):
        run_check(dict(pp=2, vpp=2))
    with pytest.raises(ScenarioError, match="numerics.dp: 0: expected a positive integer"):
        run_check(dict(dp=0))
    with pytest.raises(ScenarioError, match="numerics.zero: ZeRO shards"):
        run_check(dict(dp=2, zero=2, grad_sync="ps"))
    with pytest.raises(ScenarioError, match="numerics.sync_rule"):
        run_check(dict(dp=2, zero=1, sync_rule="sum_params"))
    with pytest.raises(Infeasible, match="need at least 4 blocks; the model has 2"):
        run_check(dict(pp=2, vpp=2, schedule="interleaved"))
    with pytest.raises(Infeasible, match="not divisible by tp = 3"):
        run_check(dict(tp=3))
