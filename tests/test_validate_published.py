"""``parsim validate --published``: the published-runs table, pinned.

Data: shared/data/published_runs.csv (85 rows, 60 with a usable step time; see
shared/data/README.md). The pinned errors are the current model's, so a change that
worsens accuracy fails here; tighten them when the model improves. The issue's target mean
(<= 8 %) is met; its worst-row target (<= 20 %) is not yet: five rows (MPT-7B on H100,
BLOOM's batch-size ramp-up) miss by up to 4 points; see README "Validation".
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
PINNED = {"narayanan21": (18, 5.0, 12.9), "korthikanti22": (7, 3.9, 8.8),
          "megatron_readme2020": (12, 7.5, 11.6), "bloom176b": (3, 16.1, 23.2),
          "mosaic": (16, 9.2, 24.0), "nemo2407": (4, 8.3, 16.2)}
PINNED_OVERALL = (60, 7.3, 24.0)
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


def test_issue_mean_target_is_met(report):
    assert report.mean_abs_pct_error <= 8.0


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
    assert raw["cluster"]["nic_bandwidth"] == "50 Gb/s"         # 4 Omni-Path links / 8 GPUs
    raw, _ = row_scenario(rows["narayanan21_t2_ptdp_174.6B_384gpu"])
    assert raw["parallel"]["pipeline_p2p"] == "paired"         # Megatron-LM before Core
    raw, _ = row_scenario(rows["nemo2407_llama3-8b_8gpu"])
    assert raw["training"]["overlap_grad_reduce"] is True
    assert "pipeline_p2p" not in raw["parallel"]               # Megatron-Core overlaps
    raw, _ = row_scenario(rows["megatron_readme2020_8B_dgxa100_dp128"])
    assert raw["training"]["micro_batch"] == 16                # 2020 code: no accumulation
    raw, reason = row_scenario(rows["opt175b"])
    assert raw is None and reason.startswith("not predictable")


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
