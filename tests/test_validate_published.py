"""``parsim validate --published``: the published-runs table, pinned.

Data: shared/data/published_runs.csv (85 rows, 60 with a usable step time; see
shared/data/README.md). The pinned errors are the current model's, so a change that
worsens accuracy fails here; tighten them when the model improves. Both of the issue's
targets are met: mean <= 8 %, worst <= 20 % (the worst row, MPT-7B on 512 H100, at -19.0 %
is close to it; see README "Validation").
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from parsim.errors import ScenarioError
from parsim.validate.published import read_rows, row_scenario, validate_published

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "published_runs.csv"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason="shared/data/published_runs.csv absent")

# source -> (rows, mean |error| %, worst |error| %) measured with this model; slack 0.5 point
PINNED = {"narayanan21": (18, 4.9, 12.9), "korthikanti22": (7, 3.9, 8.6),
          "megatron_readme2020": (12, 6.3, 11.3), "bloom176b": (3, 1.6, 2.2),
          "mosaic": (16, 7.0, 19.0), "nemo2407": (4, 5.5, 14.2)}
PINNED_OVERALL = (60, 5.5, 19.0)
SLACK = 0.5


@pytest.fixture(scope="module")
def report():
    return validate_published(DATA)


def test_every_row_is_predicted_or_skipped_with_a_reason(report):
    ids = [r["run_id"] for r in read_rows(DATA)]
    assert len(ids) == 85
    got = [r.run_id for r in report.rows] + [s.run_id for s in report.skipped]
    assert sorted(got) == sorted(ids)
    assert len(report.rows) == 60          # README: "a usable step-time target: 60 rows"
    assert all(s.reason for s in report.skipped)


def test_overall_error_does_not_get_worse(report):
    n, mean, worst = PINNED_OVERALL
    assert len(report.rows) == n
    assert report.mean_abs_pct_error <= mean + SLACK
    assert report.max_abs_pct_error <= worst + SLACK


@pytest.mark.parametrize("source", sorted(PINNED))
def test_per_source_error_does_not_get_worse(report, source):
    n, mean, worst = PINNED[source]
    got_n, got_mean, got_worst = report.by_source()[source]
    assert got_n == n
    assert got_mean <= mean + SLACK
    assert got_worst <= worst + SLACK


def test_issue_targets_are_met(report):
    assert report.mean_abs_pct_error <= 8.0
    assert report.max_abs_pct_error <= 20.0


def test_omnipath_figure_predicts_the_other_jean_zay_benchmark():
    """OPA_RING_CROSSING_Bps comes from BigScience's 4 nodes x 8 A100 all-reduce benchmark;
    the same repository measured 4 nodes x 4 GPUs (16 ranks, 4.0e9 bytes) at 1.505-1.528 s
    per call (experiments/bandwidth/n4_a100_all_reduce_bench.txt, after warm-up). A flat ring
    over links of that rate must reproduce it; parsim's default (hierarchical over 4 x 100
    Gb/s ports) would predict ~0.15 s, ten times too fast."""
    from parsim.cost import placement
    from parsim.topology import build_cluster
    from parsim.validate.published import OPA_BENCH_BYTES, omnipath_cluster
    opa = omnipath_cluster({"notes": "links: Omni-Path Architecture (OPA), '4 OmniPath links'"})
    cluster = build_cluster({"topology": "dgx-a100", "nodes": 4, "gpus_per_node": 4, **opa})
    t, alg = placement.group_time_s(cluster, list(range(16)), "all_reduce", OPA_BENCH_BYTES, "ring")
    assert alg == "ring" and 1.505 * 0.95 < t < 1.528 * 1.05
    assert omnipath_cluster({"notes": "links: NVLink; InfiniBand"}) is None


def test_megatron_2020_rows_within_13_percent(report):
    """Megatron-LM README 2020-09-11: tensor parallelism only, unfused attention."""
    errs = [abs(r.error_pct) for r in report.rows if r.source == "megatron_readme2020"]
    assert len(errs) == 12 and max(errs) < 13.0


def test_defaults_are_framework_rules_not_row_values():
    rows = {r["run_id"]: r for r in read_rows(DATA)}
    raw, _ = row_scenario(rows["narayanan21_t2_ptdp_174.6B_384gpu"])
    assert raw["training"]["recompute"] == "full"          # eq. 3 counts the recompute
    assert raw["training"]["flash_attention"] is False     # Megatron-LM 2021: no flash
    assert raw["training"]["micro_batch"] == 1
    raw, _ = row_scenario(rows["nemo2407_llama3-8b_8gpu"])
    assert raw["model"]["gated_mlp"] and raw["training"]["flash_attention"]
    raw, _ = row_scenario(rows["bloom176b_main_gbs2048"])
    assert raw["parallel"]["stage_layers"] == [5] + [6] * 10 + [5]
    assert raw["parallel"]["pipeline_p2p"] == "sequential"    # DeepSpeed pipeline engine
    assert raw["parallel"]["scatter_gather"] is False
    assert raw["parallel"]["zero_grad_reduce"] == "all_reduce"  # BF16_Optimizer
    assert raw["training"]["overlap_grad_reduce"] is False
    assert raw["cluster"]["nic_efficiency"] == 1.0              # measured NCCL rate over OPA
    assert raw["parallel"]["algorithm"] == "ring"               # NCCL 2.10, 2 channels
    raw, _ = row_scenario(rows["mosaic_mpt7b_h100_80gb_8gpu_L118"])
    assert raw["training"]["attention_kernel"] == "fa2"         # llm-foundry: flash-attn 2.5
    assert raw["training"]["unpadded_attention"] is True
    raw, _ = row_scenario(rows["narayanan21_t2_ptdp_174.6B_384gpu"])
    assert raw["parallel"]["pipeline_p2p"] == "paired"         # Megatron-LM before Core
    raw, _ = row_scenario(rows["nemo2407_llama3-8b_8gpu"])
    assert raw["training"]["overlap_grad_reduce"] is True
    assert "pipeline_p2p" not in raw["parallel"]               # Megatron-Core overlaps
    assert raw["parallel"]["zero"] == 1                        # NeMo: distributed optimizer
    assert raw["parallel"]["sequence_parallel"] is False       # tp = 1: nothing to split
    raw, _ = row_scenario(rows["nemo2407_gpt3-175b_512gpu"])
    assert raw["parallel"]["sequence_parallel"] is True        # NeMo sets it with tp > 1
    raw, _ = row_scenario(rows["korthikanti22_22B_fullrecompute"])
    assert raw["parallel"]["zero"] == 0                        # Megatron-LM default
    raw, _ = row_scenario(rows["megatron_readme2020_8B_dgxa100_dp128"])
    assert raw["training"]["micro_batch"] == 16                # 2020 code: no accumulation
    raw, reason = row_scenario(rows["opt175b"])
    assert raw is None and reason.startswith("not predictable")


def test_every_published_run_fits_in_memory():
    """These runs were trained, so parsim's memory model must let every layout fit. Before the
    NeMo rows took NeMo's distributed optimizer and sequence parallelism, its Llama-3 8B on 8
    H100 needed 166 GB per GPU (fp32 Adam state of 8B parameters unsharded)."""
    from parsim.engines import analytical
    from parsim.predict import cluster_for, device_for
    from parsim.scenario import scenario_from_dict
    over = []
    for row in read_rows(DATA):
        raw, _ = row_scenario(row)
        if raw is None or not (row.get("step_time_s") or "").strip():
            continue
        sc = scenario_from_dict(raw, file=None)
        pred = analytical.run(sc, device_for(sc), cluster_for(sc))
        if not pred.fits_in_memory:
            over.append((row["run_id"], pred.memory_bytes["total"] / 1e9))
    assert over == []


def test_cli_table_json_and_plot(run_cli, tmp_path):
    code, out, err = run_cli("validate", "--published", DATA)
    assert code == 0 and err == ""
    assert "overall" in out and "skipped (25)" in out and "narayanan21_t1_1.7B" in out
    code, out, _ = run_cli("validate", "--published", DATA, "--json",
                           "--plot", tmp_path / "v.png")
    assert code == 0
    doc = json.loads(out)
    assert {"rows", "skipped", "mean_abs_pct_error", "max_abs_pct_error"} <= set(doc)
    assert set(doc["rows"][0]) >= {"run_id", "measured_s", "predicted_s", "error_pct"}
    assert set(doc["skipped"][0]) == {"run_id", "reason"}
    assert (tmp_path / "v.png").stat().st_size > 1000


def test_cli_errors_are_one_line(run_cli, tmp_path):
    code, _, err = run_cli("validate", "--published", tmp_path / "none.csv")
    assert code == 2 and "file not found" in err and err.count("\n") == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    code, _, err = run_cli("validate", "--published", bad)
    assert code == 2 and "header lacks column(s) run_id" in err


def test_read_rows_rejects_bad_header(tmp_path):
    p = tmp_path / "x.csv"
    with p.open("w", newline="") as f:
        csv.writer(f).writerow(["run_id", "model"])
    with pytest.raises(ScenarioError, match="header lacks"):
        read_rows(p)
