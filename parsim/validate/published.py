"""Published training runs vs parsim's predictions (``parsim validate --published FILE.csv``).

Reads the ``published_runs.csv`` format of ``shared/data/README.md``: one row per published
run, with the model, hardware, parallel layout and, where the source gives or implies it,
the iteration time ``step_time_s``. Each row whose configuration is complete becomes a
scenario (:func:`row_scenario`) that the analytical engine predicts; the others are listed
with the reason they were skipped, never dropped silently.

ONE model for every row: values a row leaves empty are filled by the frameworks' documented
defaults below (``DEFAULTS`` and the rules in :func:`row_scenario`), never from the row's
measured time, and there is no per-run or per-source correction.

Defaults and rules (each a property of the framework or the model family, not of a row):

* ``micro_batch`` 1 (but see Megatron-LM 2020 below), ``recompute`` none, ``zero`` 0,
  ``sequence_parallel`` off, ``cp``/``ep``
  1: Megatron-LM's argument defaults (``--micro-batch-size`` in its examples is 1,
  ``--recompute-granularity`` unset, ``--sequence-parallel`` off).
* ``vpp`` unstated with the interleaved schedule named: 2 chunks per device when they divide
  the layers (the smallest interleaving; Narayanan et al. 2021 Fig. 12 uses 2), else plain
  1F1B.
* ``kv_heads`` = ``heads`` (no GQA stated), ``ffn_hidden`` = 4·hidden (GPT; Narayanan et al.
  2021 appendix). A row with ``kv_heads`` < ``heads`` or ``ffn_hidden`` ≠ 4·hidden, or named
  Llama, is a Llama-style model: SwiGLU MLP, RMSNorm, rotary positions, untied embeddings
  (Touvron et al. 2023).
* ``vocab`` empty for a GPT-3 model: the GPT-2 BPE vocabulary, 50257 (Brown et al. 2020, sec. 2.1).
* ``precision`` empty: bf16 (A100/H100: same peak as fp16), fp16 on V100 (no bf16 math).
* ``gpus_per_node`` empty: 8 (DGX/HGX servers).
* ``recompute`` empty where the step time comes from Narayanan et al. 2021 eq. 3 (hardware
  FLOPs, which count the recompute forward pass): full recompute, as that paper ran.
* Flash attention: only where the framework had it. FlashAttention appeared in May 2022
  (Dao et al. 2022, arXiv:2205.14135); Megatron-LM before Megatron-Core and the 2022
  Megatron-DeepSpeed fork ran unfused attention (fused softmax only). Rows whose framework
  note names FlashAttention, Megatron-Core, NeMo or Transformer Engine use it.
* NeMo rows: a distributed optimizer (``zero`` 1) and sequence parallelism with tensor
  parallelism, as every NeMo training configuration of those models sets
  (``DISTRIBUTED_OPTIMIZER_FRAMEWORKS``).
* Pipeline stages when ``pp`` does not divide the layers: DeepSpeed's balanced partition
  (:func:`_stage_layers`).
* Cluster: ``dgx-a100`` for A100 rows, ``dgx-h100`` for H100/H200 rows, and for V100 (DGX-2:
  16 V100 on NVSwitch, 8× EDR 100 Gb/s InfiniBand) ``dgx-a100`` with ``nvlink_bandwidth``
  150 GB/s and ``nic_bandwidth`` 100 Gb/s (NVIDIA DGX-2 datasheet), NVLink2 achieving 0.81 of
  it (GTC24 S62129: 122 of 150 GB/s). A links note naming N Omni-Path links per node (BLOOM's
  Jean Zay) sets ``nic_bandwidth`` to N × 100 Gb/s over the node's GPUs (Intel OPA 100 series).
* ``micro_batch`` unstated on Megatron-LM 2020 rows (before v2.0): global_batch / dp, as
  that code had no gradient accumulation (:func:`_micro_batch`).
* Gradient reduction and parameter all-gather overlap the backward pass only in frameworks
  that do it (``OVERLAP_GRAD_FRAMEWORKS``: Megatron-Core / NeMo, PyTorch FSDP); Megatron-LM
  before Megatron-Core and DeepSpeed reduce after the last backward.
* Pipeline sends (:func:`_pipeline_p2p`): Megatron-LM before Megatron-Core blocks on paired
  exchanges, the DeepSpeed pipeline engine on four separate sends and receives per
  micro-batch without the scatter/gather optimisation, and DeepSpeed's BF16_Optimizer
  all-reduces (not reduce-scatters) the FP32 gradients.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ParsimError, ScenarioError

REQUIRED_COLUMNS = (
    "run_id", "model", "layers", "hidden", "heads", "kv_heads", "ffn_hidden", "seq_len", "vocab",
    "gpu", "num_gpus", "gpus_per_node", "tp", "pp", "dp", "cp", "ep", "sequence_parallel", "vpp",
    "zero", "fsdp", "micro_batch", "global_batch", "recompute", "precision", "schedule",
    "step_time_s", "source", "notes")

DEFAULTS = {"micro_batch": 1, "recompute": "none", "zero": 0, "cp": 1, "ep": 1,
            "gpus_per_node": 8}
GPT3_VOCAB = 50257          # GPT-2 BPE, used by GPT-3 (Brown et al. 2020, sec. 2.1)
# Frameworks with fused flash attention (Dao et al. 2022): named in the row's framework note.
FLASH_FRAMEWORKS = ("flashattention", "megatron-core", "nemo", "transformer engine")
# Frameworks that overlap the data-parallel gradient reduction with the backward pass:
# Megatron-Core / NeMo (``--overlap-grad-reduce``, added to Megatron-LM in Sept. 2023:
# NVIDIA/Megatron-LM issues #391 and #456, commit e801b2bb) and PyTorch FSDP (MosaicML
# Composer; reduce-scatter per layer as its backward ends, Zhao et al. 2023, "PyTorch FSDP",
# VLDB 16(12), sec. 3.3). Megatron-LM before Megatron-Core all-reduces the gradients after
# the last micro-batch's backward (megatron/training.py ``train_step``:
# ``model.allreduce_gradients()``), and the DeepSpeed pipeline engine reduces them in a
# ``ReduceGrads`` instruction after the schedule's last backward (deepspeed/runtime/pipe/
# schedule.py ``TrainSchedule``): nothing hides them. DeepSpeed ZeRO-3 as run with Megatron-LM
# in 2021 (Narayanan et al. 2021, Table 2): judgement, the paper gives no DeepSpeed config and
# DeepSpeed's ``overlap_comm`` then defaulted to off, so its reduce-scatter is not hidden either.
OVERLAP_GRAD_FRAMEWORKS = ("megatron-core", "nemo", "composer", "fsdp")
# Pipeline sends by framework (parsim.engines.analytical.BLOCKING_P2P): DeepSpeed's pipeline
# engine (Megatron-DeepSpeed) blocks on separate sends and receives and has no scatter/gather
# of the TP ranks' activations; Megatron-LM before Megatron-Core pairs blocking exchanges;
# Megatron-Core / NeMo overlap them (--overlap-p2p-communication with interleaving).
def _pipeline_p2p(row) -> dict:
    fw = _framework(row)
    if "deepspeed" in fw and "megatron-deepspeed" in fw:
        out = {"pipeline_p2p": "sequential", "scatter_gather": False}
        if "bf16_optimizer" in row.get("notes", "").lower():
            out["zero_grad_reduce"] = "all_reduce"   # see ParallelSpec.zero_grad_reduce
        return out
    if "megatron-lm" in fw and not _framework_in(row, ("megatron-core", "nemo")):
        return {"pipeline_p2p": "paired"}
    return {}


# NeMo's training configurations (NVIDIA/NeMo-Framework-Launcher, launcher_scripts/conf/
# training: gpt3/175b_fp8_performance.yaml, llama/llama3_70b.yaml, llama/llama3_8b.yaml, the
# models of the NeMo 24.07 performance rows) all run a distributed optimizer with its gradient
# reduce-scatter and parameter all-gather overlapped (``optim.name`` distributed_fused_adam,
# Apex's ZeRO-2-style optimizer, or mcore_distributed_optim, Megatron-Core's; both shard the
# optimizer state: ``zero`` 1 is what they share) and set ``sequence_parallel: true`` wherever
# tensor parallelism is on. Rows leaving these columns empty take them.
DISTRIBUTED_OPTIMIZER_FRAMEWORKS = ("nemo",)


def _zero(row) -> int:
    stated = _int(row, "zero")
    if stated is not None:
        return stated
    return 1 if _framework_in(row, DISTRIBUTED_OPTIMIZER_FRAMEWORKS) else DEFAULTS["zero"]


def _sequence_parallel(row, tp: int) -> bool:
    stated = _int(row, "sequence_parallel")
    if stated is not None:
        return stated == 1
    return tp > 1 and _framework_in(row, DISTRIBUTED_OPTIMIZER_FRAMEWORKS)


# NCCL over Intel Omni-Path on Jean Zay's A100 partition (the BLOOM rows), as measured there
# by BigScience: bigscience-workshop/bigscience experiments/bandwidth/all_reduce_bench.py
# all-reduced 4.0e9 bytes (fp32, M*N*4 with N=500000, M=2000) over 4 nodes x 8 A100 in
# 1.519-1.531 s per call (all_reduce_bench-a100-n4.txt: busbw 40.5-40.8 Gb/s). Its NCCL log
# (2.10.3) shows the IB-verbs transport on the hfi1 adapters without GPUDirect RDMA and only
# 2 rings ("2 coll channels"), so the figure is what one ring crossing between two nodes
# carries, not the 4 x 100 Gb/s of the node's ports: 2(n-1)/n * S / t for n = 32.
# tests/test_validate_published.py checks it against the second measurement there
# (4 nodes x 4 GPUs, 1.505-1.528 s).
OPA_BENCH_BYTES, OPA_BENCH_RANKS, OPA_BENCH_S = 4.0e9, 32, 1.525
OPA_RING_CROSSING_Bps = 2 * (OPA_BENCH_RANKS - 1) / OPA_BENCH_RANKS * OPA_BENCH_BYTES / OPA_BENCH_S
# DGX-2 datasheet; NVLink2 achieves 122 of 150 GB/s busbw (GTC24 S62129, collectives.csv gtc24_nvlink2_v100)
DGX2 = {"nvlink_bandwidth": "150 GB/s", "nic_bandwidth": "100 Gb/s", "nvlink_efficiency": 0.81}


@dataclass(frozen=True)
class RowResult:
    run_id: str
    source: str
    measured_s: float
    predicted_s: float

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted_s - self.measured_s) / self.measured_s


@dataclass(frozen=True)
class Skipped:
    run_id: str
    reason: str


@dataclass
class Report:
    rows: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def by_source(self) -> dict:
        """source -> (rows, mean |error| %, max |error| %), in first-seen order."""
        groups: dict = {}
        for r in self.rows:
            groups.setdefault(r.source, []).append(abs(r.error_pct))
        return {s: (len(e), sum(e) / len(e), max(e)) for s, e in groups.items()}

    @property
    def mean_abs_pct_error(self) -> float:
        e = [abs(r.error_pct) for r in self.rows]
        return sum(e) / len(e) if e else math.nan

    @property
    def max_abs_pct_error(self) -> float:
        return max((abs(r.error_pct) for r in self.rows), default=math.nan)

    def to_json(self) -> dict:
        return {"rows": [{"run_id": r.run_id, "source": r.source, "measured_s": r.measured_s,
                          "predicted_s": r.predicted_s, "error_pct": r.error_pct}
                         for r in self.rows],
                "skipped": [{"run_id": s.run_id, "reason": s.reason} for s in self.skipped],
                "by_source": {s: {"rows": n, "mean_abs_pct_error": m, "max_abs_pct_error": x}
                              for s, (n, m, x) in self.by_source().items()},
                "mean_abs_pct_error": self.mean_abs_pct_error,
                "max_abs_pct_error": self.max_abs_pct_error}


# ----------------------------------------------------------------------------- reading
def read_rows(path) -> list[dict]:
    """Rows of a published-runs CSV; :class:`ScenarioError` if unreadable or the header is wrong."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError("file not found; give a published-runs .csv file", file=str(p)) from None
    except IsADirectoryError:
        raise ScenarioError("is a directory; give a published-runs .csv file", file=str(p)) from None
    except UnicodeDecodeError:
        raise ScenarioError("is not a UTF-8 text file", file=str(p)) from None
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ScenarioError(f"header lacks column(s) {', '.join(missing)}; the format is "
                            "shared/data/README.md 'published_runs.csv'", file=str(p))
    return list(reader)


def source_label(run_id: str) -> str:
    """Short source name from the run id: its first token (two for the Megatron README)."""
    parts = run_id.split("_")
    return "_".join(parts[:2]) if parts[0] == "megatron" and len(parts) > 1 else parts[0]


def _int(row, key, default=None):
    v = (row.get(key) or "").strip()
    if not v:
        return default
    f = float(v)
    if f != int(f):
        raise ValueError(f"{key} = {v} is not an integer")
    return int(f)


def _framework(row) -> str:
    segs = [s for s in row.get("notes", "").split(" | ") if s.startswith("framework")]
    return segs[0].lower() if segs else ""


def _framework_in(row, names) -> bool:
    """True if the row's framework note names any of ``names``."""
    fw = _framework(row)
    return any(name in fw for name in names)


def _flash(row) -> bool:
    """True if the row's framework has fused (flash) attention; see ``FLASH_FRAMEWORKS``."""
    return _framework_in(row, FLASH_FRAMEWORKS)


# llm-foundry's attention (the MosaicML rows): flash-attn 2.x, pinned by its ``gpu-flash2``
# extra (setup.py, 2024 snapshots: flash-attn 2.5.x); FlashAttention-3 for Hopper appeared in
# July 2024 (Shah et al., arXiv:2407.08608), after the benchmark table's last change
# (2024-04-22). Its ``flash_attn_fn`` packs q, k, v for the varlen kernel and pads the output
# back (llmfoundry/models/layers/attention.py; see parsim.cost.compute._unpad_bytes).
FA2_UNPADDED_FRAMEWORKS = ("llm-foundry",)


def _attention(row) -> dict:
    if _framework_in(row, FA2_UNPADDED_FRAMEWORKS):
        return {"attention_kernel": "fa2", "unpadded_attention": True}
    return {}


def _overlap_grad_reduce(row) -> bool:
    """True if the row's framework overlaps gradient reduction with the backward pass
    (``OVERLAP_GRAD_FRAMEWORKS``); unknown frameworks keep parsim's default (overlap)."""
    return not _framework(row) or _framework_in(row, OVERLAP_GRAD_FRAMEWORKS)


def _links(row) -> str:
    segs = [s for s in row.get("notes", "").split(" | ") if s.startswith("links")]
    return segs[0].lower() if segs else ""


def omnipath_cluster(row) -> dict | None:
    """Cluster overrides where the links note names Omni-Path (the BLOOM rows), else None:
    every GPU's network link carries ``OPA_RING_CROSSING_Bps``, a measured (achieved) rate.
    The caller also sets ``parallel.algorithm = "ring"``: with two channels NCCL does not
    spread a ring's traffic over all of a node's ports, which is what parsim's hierarchical
    all-reduce models. Assumption (not measured): the 8 data-parallel rings a node runs at
    once each get that rate, 325 of the node's 400 Gb/s of ports together."""
    if "omni-path" not in _links(row):
        return None
    return {"nic_bandwidth": f"{OPA_RING_CROSSING_Bps / 1e9:.4f} GB/s", "nic_efficiency": 1.0}


def _micro_batch(row, dp: int) -> int:
    """Stated micro-batch, else the framework default. Megatron-LM before v2.0 (the 2020
    code, no pipeline parallelism) had no gradient accumulation: its ``--batch-size`` is the
    batch of one model replica per step (``arguments.py``: "Batch size per model instance
    (local batch size). Global batch size is local batch size times data parallel size"),
    so one micro-batch of global_batch / dp; ``--micro-batch-size`` (default 1 in the
    examples) arrived with pipeline parallelism in v2.0. Otherwise ``DEFAULTS``."""
    stated = _int(row, "micro_batch")
    if stated is not None:
        return stated
    if "megatron-lm (2020" in _framework(row):
        return max(1, _int(row, "global_batch") // dp)
    return DEFAULTS["micro_batch"]


def _recompute(row) -> str:
    """Stated recompute, else full where the source's FLOP count includes the recompute
    forward pass (Narayanan et al. 2021 eq. 3: the runs recomputed), else none."""
    stated = (row.get("recompute") or "").strip()
    if stated:
        return stated
    if "eq.3 hardware" in row.get("step_time_basis", "") or "eq. 3" in row.get("notes", ""):
        return "full"
    return DEFAULTS["recompute"]


def _stage_layers(layers: int, chunks: int) -> list[int] | None:
    """Layers per pipeline stage when ``chunks`` does not divide ``layers``: DeepSpeed's
    ``partition_method='type:transformer|embedding'`` balances layers counting the
    embedding and the output head as one layer each, so the first and last stages hold
    one transformer layer less (BigScience tr11 README)."""
    if layers % chunks == 0:
        return None
    per, extra = divmod(layers + 2, chunks)
    out = [per + (1 if i < extra else 0) for i in range(chunks)]
    out[0] -= 1
    out[-1] -= 1
    return out if sum(out) == layers and min(out) > 0 else None


# ----------------------------------------------------------------------------- row -> scenario
def row_scenario(row: dict) -> tuple[dict | None, str | None]:
    """(scenario dict, None), or (None, the reason the row cannot be predicted)."""
    notes = row.get("notes", "")
    if notes.startswith("not predictable"):
        return None, notes.split(" | ")[0]
    if not (row.get("step_time_s") or "").strip():
        seg = [s for s in notes.split(" | ") if s.startswith("step_time_s empty")]
        return None, seg[0] if seg else "no step_time_s (the source gives no iteration time)"
    for key in ("layers", "hidden", "heads", "seq_len", "gpu", "num_gpus", "tp", "pp",
                "global_batch"):
        if not (row.get(key) or "").strip():
            return None, f"{key} not stated"
    try:
        return _scenario(row), None
    except ValueError as err:
        return None, str(err)


def _scenario(row: dict) -> dict:
    layers, hidden, heads = _int(row, "layers"), _int(row, "hidden"), _int(row, "heads")
    kv_heads = _int(row, "kv_heads", heads)
    ffn = _int(row, "ffn_hidden", 4 * hidden)
    name = row.get("model", "")
    vocab = _int(row, "vocab")
    if vocab is None:
        if "gpt" not in name.lower():
            raise ValueError("vocab not stated")
        vocab = GPT3_VOCAB
    llama = kv_heads < heads or ffn != 4 * hidden or "llama" in name.lower()
    model = {"kind": "transformer", "name": row["run_id"], "layers": layers, "hidden": hidden,
             "heads": heads, "kv_heads": kv_heads, "ffn_hidden": ffn,
             "seq_len": _int(row, "seq_len"), "vocab": vocab}
    if llama:
        model.update(gated_mlp=True, norm="rmsnorm", position="rope", tied_embeddings=False,
                     bias=False)
    gpu = row["gpu"].strip()
    precision = (row.get("precision") or "").strip() or ("fp16" if gpu.startswith("v100") else "bf16")
    tp, pp = _int(row, "tp"), _int(row, "pp")
    cp = _int(row, "cp", DEFAULTS["cp"])
    n = _int(row, "num_gpus")
    dp = _int(row, "dp", n // (tp * pp * cp))
    overlap = _overlap_grad_reduce(row)
    training = {"global_batch": _int(row, "global_batch"),
                "micro_batch": _micro_batch(row, dp),
                "precision": precision,
                "recompute": _recompute(row),
                "flash_attention": _flash(row),
                "overlap_grad_reduce": overlap, "overlap_param_gather": overlap,
                **_attention(row)}
    parallel = {"tp": tp, "pp": pp, "cp": cp, "dp": dp,
                "zero": _zero(row), "sequence_parallel": _sequence_parallel(row, tp)}
    parallel.update(_pipeline_p2p(row))
    ep = _int(row, "ep", DEFAULTS["ep"])
    if ep > 1:
        parallel["ep"] = ep
    vpp = _int(row, "vpp")
    schedule = (row.get("schedule") or "").strip()
    if vpp is None and schedule == "interleaved" and pp > 1:
        vpp = 2 if layers % (2 * pp) == 0 else 1
    uneven = _stage_layers(layers, pp) if not (vpp and vpp > 1) else None
    if uneven:
        parallel["stage_layers"] = uneven
    if vpp and vpp > 1 and pp > 1:
        parallel.update(vpp=vpp, schedule="interleaved")
    else:
        parallel["schedule"] = "1f1b"
    gpn = min(_int(row, "gpus_per_node", DEFAULTS["gpus_per_node"]), n)
    cluster = {"gpu": gpu, "gpus": n, "gpus_per_node": gpn}
    if gpu.startswith("a100"):
        cluster["topology"] = "dgx-a100"
    elif gpu.startswith(("h100", "h200")):
        cluster["topology"] = "dgx-h100"
    elif gpu.startswith("v100"):
        cluster.update(topology="dgx-a100", **DGX2)
    else:
        raise ValueError(f"gpu {gpu!r} has no cluster preset")
    opa = omnipath_cluster(row)
    if opa is not None:
        cluster.update(opa)
        parallel["algorithm"] = "ring"
    return {"name": row["run_id"], "model": model, "training": training, "parallel": parallel,
            "cluster": cluster}


# ----------------------------------------------------------------------------- predicting
def predict_row(row: dict) -> float:
    """Predicted step time (s) of a predictable row, analytical engine."""
    from ..predict import predict
    from ..scenario import scenario_from_dict
    raw, reason = row_scenario(row)
    if raw is None:
        raise ValueError(reason)
    return predict(scenario_from_dict(raw, file=None), engine="analytical").step_time_s


def validate_published(path, progress=None) -> Report:
    """Predict every predictable row of ``path``; the rest go to ``Report.skipped``."""
    report = Report()
    rows = read_rows(path)
    for i, row in enumerate(rows):
        run_id = row.get("run_id") or f"row {i + 2}"
        raw, reason = row_scenario(row)
        if raw is None:
            report.skipped.append(Skipped(run_id, reason))
            continue
        try:
            t = predict_row(row)
        except ParsimError as err:   # a layout the scenario rules reject
            report.skipped.append(Skipped(run_id, f"not simulable: {err}"))
            continue
        report.rows.append(RowResult(run_id, source_label(run_id), float(row["step_time_s"]), t))
        if progress:
            progress(i + 1, len(rows))
    return report
