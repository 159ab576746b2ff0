"""Golden values of the closed forms, each with its source."""
from __future__ import annotations

import json

import pytest

from parsim import units
from parsim.cost import collectives as cc
from parsim.cost import memory
from parsim.cost.placement import group_time_s
from parsim.models import transformer as tfm
from parsim.scenario import scenario_from_dict
from parsim.topology import build_cluster


def test_decimal_and_binary_prefixes():
    assert units.parse_bytes("1 GB") == 1e9
    assert units.parse_bytes("1 GiB") == 2**30
    assert units.parse_bandwidth("200 Gb/s") == 25e9       # bits become bytes only here
    assert units.parse_bandwidth("25 GB/s") == 25e9
    assert units.parse_time("5 us") == pytest.approx(5e-6)
    assert units.parse_flops("989 TFLOP/s") == 989e12


@pytest.mark.parametrize("n", [2, 3, 4, 8, 16])
@pytest.mark.parametrize("size", [1e3, 1e6, 256 * 2**20, 2**30])
def test_ring_topology_all_reduce_is_exact(n, size):
    """Thakur et al. 2005: ring all-reduce 2(n-1)a + 2(n-1)/n·S/B on a ring of n devices."""
    B, a = 100e9, 5e-6
    cluster = build_cluster({"topology": "ring", "gpus": n, "link_bandwidth": B,
                             "link_latency": a})
    ranks = list(range(n))
    t, alg = group_time_s(cluster, ranks, "all_reduce", size, "ring")
    assert alg == "ring"
    assert t == pytest.approx(2 * (n - 1) * a + 2 * (n - 1) / n * size / B, rel=1e-12)
    for op in ("reduce_scatter", "all_gather"):
        t, _ = group_time_s(cluster, ranks, op, size, "ring")
        assert t == pytest.approx((n - 1) * a + (n - 1) / n * size / B, rel=1e-12)


def test_busbw_follows_nccl_tests():
    """nccl-tests PERFORMANCE.md: busbw = algbw·2(n-1)/n (all-reduce), ·(n-1)/n (RS, AG)."""
    n, S, t = 8, 2**30, 0.01
    assert cc.busbw_Bps("all_reduce", n, S, t) == pytest.approx(S / t * 14 / 8)
    assert cc.busbw_Bps("all_gather", n, S, t) == pytest.approx(S / t * 7 / 8)
    assert cc.busbw_Bps("reduce_scatter", n, S, t) == pytest.approx(S / t * 7 / 8)
    # a ring at link speed B has busbw B when alpha = 0
    assert cc.busbw_Bps("all_reduce", n, S, cc.ring_all_reduce_s(n, S, 50e9, 0)) == pytest.approx(50e9)


def test_collectives_zero_for_one_rank_and_monotone():
    for f in (cc.ring_all_reduce_s, cc.tree_all_reduce_s, cc.halving_doubling_all_reduce_s,
              cc.ring_reduce_scatter_s, cc.ring_all_gather_s, cc.all_to_all_s):
        assert f(1, 1e9, 1e9, 1e-6) == 0
        assert f(8, 2e9, 1e9, 1e-6) > f(8, 1e9, 1e9, 1e-6)
        assert f(8, 1e9, 2e9, 1e-6) < f(8, 1e9, 1e9, 1e-6)


def test_ps_incast_bottleneck():
    """Li et al. OSDI 2014 / BytePS OSDI 2020: (n·S/k)/B per server per direction."""
    n, k, S, B = 16, 2, 1e9, 10e9
    assert cc.ps_push_pull_s(n, k, S, B, B, 0.0) == pytest.approx(2 * n * S / k / B)


GPT3 = {"model": {"preset": "gpt3-175b"},
        "training": {"global_batch": 1536, "micro_batch": 1, "recompute": "full",
                     "flash_attention": False},
        "parallel": {"dp": 8, "tp": 8, "pp": 16},
        "cluster": {"topology": "dgx-a100", "gpu": "a100-80gb", "nodes": 128}}


def _gpt3(**parallel):
    raw = json.loads(json.dumps(GPT3))
    raw["parallel"].update(parallel)
    return scenario_from_dict(raw)


def test_gpt3_175b_parameters():
    """174.6 billion parameters (Brown et al. 2020; Narayanan et al. 2021 Table 1 lists 175B)."""
    assert tfm.total_params(_gpt3().model) / 1e9 == pytest.approx(174.6, abs=0.05)


def test_gpt3_hardware_flops_match_megatron_eq3():
    """Narayanan et al. 2021 eq. 3: 96·B·s·l·h²·(1 + s/6h + V/16lh), to four digits."""
    sc = _gpt3()
    B, s, l, h, V = 1536, 2048, 96, 12288, 51200
    eq3 = 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h))
    assert tfm.hardware_flops(sc.model, B, "full") == pytest.approx(eq3, rel=1e-4)
    eq_model = 72 * B * s * l * h * h * (1 + s / (6 * h) + V / (12 * l * h))
    assert tfm.model_flops(sc.model, B) == pytest.approx(eq_model, rel=1e-4)


@pytest.mark.parametrize("recompute,sp,expected_sbh", [
    # Korthikanti et al. 2022, Table 2, per layer, in units of s·b·h bytes (t = 8, a = 96,
    # s = 2048, h = 12288, so 5as/h = 80)
    ("none", False, 10 + 24 / 8 + 80 / 8),
    ("none", True, (34 + 80) / 8),
    ("selective", False, 10 + 24 / 8),
    ("selective", True, 34 / 8),
    ("full", False, 2),
    ("full", True, 2 / 8),
])
def test_activation_memory_matches_korthikanti(recompute, sp, expected_sbh):
    sc = _gpt3(sequence_parallel=sp)
    sbh = 2048 * 1 * 12288
    assert memory.layer_activation_bytes(sc, recompute) == pytest.approx(expected_sbh * sbh)


def test_optimizer_memory_bytes_per_parameter():
    """Mixed-precision Adam: 2 + 4 (fp32 grads) + 12 = 18 bytes; distributed optimizer
    6 + 12/DP (Megatron-LM docs; Rajbhandari et al. 2020)."""
    sc = _gpt3()
    mem = memory.memory_per_device(sc, 80 * 2**30)
    n = memory.stage_params(sc, mem["stage"])
    assert (mem["params"] + mem["grads"] + mem["optimizer"]) / n == pytest.approx(18)
    sc1 = _gpt3(zero=1)
    mem1 = memory.memory_per_device(sc1, 80 * 2**30)
    assert (mem1["params"] + mem1["grads"] + mem1["optimizer"]) / n == pytest.approx(6 + 12 / 8)
    sc3 = _gpt3(zero=3)
    mem3 = memory.memory_per_device(sc3, 80 * 2**30)
    assert (mem3["params"] + mem3["grads"] + mem3["optimizer"]) / n == pytest.approx(18 / 8)
