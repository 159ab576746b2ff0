"""Every user mistake: one line on stderr naming file and key, exit code 2, no traceback."""
from __future__ import annotations

import pytest

BASE = """
name = "base"
[model]
preset = "gpt3-1.3b"
[training]
global_batch = 64
micro_batch = 1
[parallel]
dp = 4
tp = 2
pp = 2
[cluster]
topology = "dgx-a100"
gpu = "a100-80gb"
nodes = 2
gpus_per_node = 8
"""


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# (id, scenario text, extra CLI args, text the one line must contain)
CASES = [
    ("toml-syntax", BASE + "\n[model\n", [], "invalid TOML"),
    ("top-level-key", BASE.replace('name = "base"', 'nme = "x"'), [], "did you mean 'name'"),
    ("model-key", _edit(BASE, 'preset = "gpt3-1.3b"', 'preset = "gpt3-1.3b"\nlayer = 3'), [],
     "model.layer"),
    ("training-key", _edit(BASE, "micro_batch = 1", "microbatch = 1"), [], "training.microbatch"),
    ("parallel-key", _edit(BASE, "tp = 2", "tp = 2\nzer0 = 1"), [], "did you mean 'zero'"),
    ("cluster-key", _edit(BASE, "nodes = 2", "nodes = 2\nnic_bandwdth = 3"), [], "cluster"),
    ("type-int", _edit(BASE, "tp = 2", 'tp = "two"'), [], "parallel.tp"),
    ("zero-degree", _edit(BASE, "tp = 2", "tp = 0"), [], "parallel.tp"),
    ("tp-heads", _edit(BASE, "tp = 2", "tp = 3"), [], "must divide model.heads"),
    ("pp-layers", _edit(BASE, "pp = 2", "pp = 5"), [], "parallel.pp"),
    ("stage-layers-sum", _edit(BASE, "pp = 2", "pp = 2\nstage_layers = [10, 10]"), [],
     "parallel.stage_layers"),
    ("layout-too-big", _edit(BASE, "dp = 4", "dp = 8"), [], "larger than the cluster"),
    ("layout-too-small", _edit(BASE, "dp = 4", "dp = 2"), [], "must equal the cluster"),
    ("batch-divisible", _edit(BASE, "global_batch = 64", "global_batch = 66"), [],
     "training.global_batch"),
    ("unknown-preset", _edit(BASE, "gpt3-1.3b", "gpt3-1.4b"), [], "model.preset"),
    ("unknown-gpu", _edit(BASE, '"a100-80gb"', '"a100-80g"'), [], "cluster.gpu"),
    ("unknown-topology", _edit(BASE, '"dgx-a100"', '"dgx-a10"'), [], "topology"),
    ("unit-dimension", _edit(BASE, "nodes = 2", 'nodes = 2\nnic_bandwidth = "100 GB"'), [],
     "nic_bandwidth"),
    ("unit-garbage", _edit(BASE, "nodes = 2", 'nodes = 2\nnic_bandwidth = "fast"'), [],
     "nic_bandwidth"),
    ("precision", _edit(BASE, "micro_batch = 1", 'micro_batch = 1\nprecision = "fp64"'), [],
     "training.precision"),
    ("attention-kernel-device", _edit(BASE, "micro_batch = 1",
                                      'micro_batch = 1\nattention_kernel = "fa3"'), [],
     "training.attention_kernel: 'fa3' does not run on a100-80gb"),
    ("attention-kernel-name", _edit(BASE, "micro_batch = 1",
                                    'micro_batch = 1\nattention_kernel = "fa4"'), [],
     "training.attention_kernel"),
    ("interleaved-no-vpp", _edit(BASE, "pp = 2", 'pp = 2\nschedule = "interleaved"'), [],
     "parallel.vpp"),
    ("zero-range", _edit(BASE, "pp = 2", "pp = 2\nzero = 4"), [], "parallel.zero"),
    ("no-cluster", BASE.split("[cluster]")[0], [], "cluster"),
    ("hf-config-missing", _edit(BASE, 'preset = "gpt3-1.3b"', 'hf_config = "nope/config.json"'),
     [], "model.hf_config"),
    ("set-no-equals", BASE, ["--set", "parallel.tp"], "KEY=VALUE"),
    ("set-unknown-key", BASE, ["--set", "parallel.tq=2"], "parallel.tq"),
    ("recompute", _edit(BASE, "micro_batch = 1", 'micro_batch = 1\nrecompute = "partial"'), [],
     "training.recompute"),
    ("kv-heads", _edit(BASE, 'preset = "gpt3-1.3b"', 'preset = "gpt3-1.3b"\nkv_heads = 5'), [],
     "model.kv_heads"),
    ("no-kind", _edit(BASE, 'preset = "gpt3-1.3b"', "layers = 4"), [], "model.kind"),
    ("negative-nodes", _edit(BASE, "nodes = 2", "nodes = -1"), [], "cluster.nodes"),
    ("ps-without-servers", _edit(BASE, "pp = 2", 'pp = 2\ngrad_sync = "ps"'), [],
     "cluster.topology"),
    ("profile-missing", BASE, ["--profile", "no/such/profile.toml"], "profile.toml"),
    ("no-global-batch", _edit(BASE, "global_batch = 64\n", ""), [], "training.global_batch"),
    ("collective-size-unit", """[model]\nkind = "collective"\nsize = "1 GiBs"\n[cluster]
topology = "ring"\ngpus = 4\nlink_bandwidth = "1 GB/s"\nlink_latency = "1 us"\n""", [],
     "model.size"),
    ("engine", BASE, ["--engine", "fast"], "engine"),
    ("vpp-needs-interleaved", _edit(BASE, "pp = 2", 'pp = 2\nvpp = 2\nschedule = "1f1b"'), [],
     "parallel.schedule"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_user_mistake_is_one_line_exit_2(case, tmp_path, run_cli):
    _id, text, extra, needle = case
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    code, out, err = run_cli("predict", path, "--engine", "analytical", *extra) \
        if "--engine" not in extra else run_cli("predict", path, *extra)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert needle in lines[0], lines[0]
    if _id not in ("set-no-equals", "set-unknown-key", "engine", "profile-missing"):
        assert "scenario.toml" in lines[0]


def test_at_least_25_distinct_mistakes():
    assert len({c[0] for c in CASES}) >= 25


def test_missing_file(run_cli, tmp_path):
    code, _, err = run_cli("predict", tmp_path / "nope.toml")
    assert code == 2 and "nope.toml" in err and "not found" in err


def test_bad_command_line_is_one_line(run_cli):
    with pytest.raises(SystemExit) as exc:
        run_cli("predict")
    assert exc.value.code == 2
