"""TOML scenario → validated, frozen :class:`Scenario`.

A scenario has four tables, ``[model]``, ``[training]``, ``[parallel]`` and
``[cluster]``, plus a top-level ``name``. Each key is declared once in
:mod:`parsim.scenario_keys` with its parser, default and what is accepted; unknown keys are errors with
a did-you-mean. Every mistake raises :class:`~parsim.errors.ScenarioError` naming
the file and the key path. Cluster keys beyond the common ones belong to the
topology and are checked by :func:`parsim.topology.build_cluster`.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .errors import ScenarioError, did_you_mean, one_of
from .models.hf import read_hf_config
from .models.presets import MODEL_PRESETS
from .scenario_keys import TABLES, TOP_KEYS, integer


# --------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class ModelSpec:
    """The workload: a transformer, an MLP, or a bare collective."""
    kind: str
    name: str = ""
    layers: int = 0
    hidden: int = 0
    heads: int = 0
    kv_heads: int = 0
    ffn_hidden: int = 0
    gated_mlp: bool = False
    bias: bool = True
    norm: str = "layernorm"
    tied_embeddings: bool = True
    position: str = "learned"
    seq_len: int = 0
    vocab: int = 0
    num_experts: int = 1
    experts_per_token: int = 1
    sizes: tuple[int, ...] = ()
    op: str = "all_reduce"
    size_bytes: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads if self.heads else 0


@dataclass(frozen=True)
class TrainingSpec:
    global_batch: int
    micro_batch: int = 1
    precision: str = "bf16"
    grad_dtype: str = "fp32"
    optimizer: str = "adam"
    recompute: str = "none"
    flash_attention: bool = True       # fused attention: no s×s scores kept or re-read
    # which flash-attention generation runs (Device.attn_kernels); "auto": Device.attn_eff
    attention_kernel: str = "auto"
    # q, k, v gathered into a packed (unpadded) layout for the varlen flash kernel and the
    # output scattered back (flash_attn.bert_padding, as llm-foundry and HF models do)
    unpadded_attention: bool = False
    overlap_grad_reduce: bool = True
    overlap_param_gather: bool = True
    bucket_size: float = 40e6
    sync_rule: str = "average"
    lr: float = 0.1
    steps: int = 10
    seed: int = 0


@dataclass(frozen=True)
class ParallelSpec:
    dp: int = 1
    tp: int = 1
    pp: int = 1
    cp: int = 1
    ep: int = 1
    vpp: int = 1
    stage_layers: tuple[int, ...] = ()
    schedule: str = "1f1b"
    sequence_parallel: bool = False
    # Pipeline sends in the steady state: "overlapped" with compute (Megatron-Core
    # --overlap-p2p-communication), "paired" blocking send+receive exchanges, two per
    # micro-batch (Megatron-LM before Megatron-Core: send_forward_recv_backward and
    # send_backward_recv_forward), "sequential" blocking sends and receives, four per
    # micro-batch (DeepSpeed PipelineEngine instructions SendActivation, RecvActivation,
    # SendGrad, RecvGrad). See parsim.engines.analytical.blocking_p2p_s.
    pipeline_p2p: str = "overlapped"
    # Split pipeline sends over the TP ranks' NICs (Narayanan et al. 2021, sec. 4.1)
    scatter_gather: bool = True
    zero: int = 0
    # ZeRO-1/2 gradient reduction: "reduce_scatter" to the owners of the optimizer shards,
    # or "all_reduce" of the whole gradients (DeepSpeed's BF16_Optimizer: engine.py
    # allreduce_gradients -> get_grads_for_reduction -> buffered_allreduce_fallback)
    zero_grad_reduce: str = "reduce_scatter"
    grad_sync: str = "allreduce"
    algorithm: str = "auto"
    ps_servers: int = 1
    ps_mode: str = "sync"
    staleness: int = 1

    @property
    def world(self) -> int:
        return self.dp * self.tp * self.pp * self.cp


@dataclass(frozen=True)
class Scenario:
    name: str
    file: str | None
    model: ModelSpec
    training: TrainingSpec
    parallel: ParallelSpec
    cluster: dict = field(default_factory=dict)   # raw table; see parsim.topology
    base_dir: str = "."

    @property
    def gpu(self) -> str:
        return self.cluster.get("gpu", "a100-80gb")

    @property
    def microbatches(self) -> int:
        """Micro-batches per pipeline per step: global_batch / (dp · micro_batch)."""
        return self.training.global_batch // (self.parallel.dp * self.training.micro_batch)


# --------------------------------------------------------------------------- loading
def load_scenario(path, overrides: list[str] | None = None) -> Scenario:
    """Read and validate a scenario file; ``overrides`` are ``KEY=VALUE`` strings
    (VALUE parsed as TOML) applied before validation."""
    path = Path(path)
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError("file not found; give the path of a scenario .toml file",
                            file=file) from None
    except IsADirectoryError:
        raise ScenarioError("is a directory; give a scenario .toml file", file=file) from None
    except UnicodeDecodeError:
        raise ScenarioError("is not a UTF-8 text file", file=file) from None
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"invalid TOML: {err}", file=file) from None
    for text in overrides or []:
        apply_override(raw, text, file="--set")
    return scenario_from_dict(raw, file=file, base_dir=str(path.parent))


def apply_override(raw: dict, text: str, *, file: str = "--set") -> None:
    """Apply ``table.key=VALUE`` (VALUE in TOML syntax; bare words are strings)."""
    if "=" not in text:
        raise ScenarioError(f"{text!r} must look like KEY=VALUE, e.g. parallel.tp=4", file=file)
    key, value_text = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text  # a bare word such as ring or a100-80gb
    parts = key.split(".")
    if not all(parts):
        raise ScenarioError(f"{key!r} is not a key path, e.g. parallel.tp", file=file)
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ScenarioError(f"{key!r}: {p} is not a table", file=file)
    node[parts[-1]] = value


def _read_table(raw: dict, table: str, file) -> dict:
    schema = TABLES[table]
    given = raw.get(table, {})
    if not isinstance(given, dict):
        raise ScenarioError(f"must be a table [{table}]", file=file, key=table)
    out = {}
    for k, v in given.items():
        if k not in schema:
            raise ScenarioError(f"unknown key{did_you_mean(k, schema)} accepted keys: "
                                + ", ".join(schema), file=file, key=f"{table}.{k}")
        out[k] = schema[k][0](v, {"file": file, "key": f"{table}.{k}"})
    return out


def _need(d: dict, key: str, table: str, file, hint: str):
    if key not in d:
        raise ScenarioError(f"missing; {hint}", file=file, key=f"{table}.{key}")
    return d[key]


def _model(raw: dict, file, base_dir: str) -> ModelSpec:
    given = _read_table(raw, "model", file)
    merged: dict = {}
    if "preset" in given:
        name = given["preset"]
        if name not in MODEL_PRESETS:
            raise ScenarioError(f"unknown preset {name!r}{did_you_mean(name, MODEL_PRESETS)} "
                                f"{one_of(MODEL_PRESETS)}", file=file, key="model.preset")
        merged.update(MODEL_PRESETS[name])
        merged["name"] = name
    if "hf_config" in given:
        p = Path(given["hf_config"])
        merged.update(read_hf_config(p if p.is_absolute() else Path(base_dir) / p, file=file))
        merged["name"] = p.parent.name or p.stem
    merged.update({k: v for k, v in given.items() if k not in ("preset", "hf_config")})
    kind = merged.get("kind")
    if kind is None:
        raise ScenarioError("missing; accepted: transformer, mlp or collective (or a preset)",
                            file=file, key="model.kind")
    w = lambda k: {"file": file, "key": f"model.{k}"}  # noqa: E731
    if kind == "mlp":
        _need(merged, "sizes", "model", file, "give layer widths, e.g. sizes = [1000, 500, 100]")
        if len(merged["sizes"]) < 2:
            raise ScenarioError("needs at least an input and an output width", **w("sizes"))
    elif kind == "collective":
        merged["size_bytes"] = _need(merged, "size", "model", file, 'e.g. size = "1 GiB"')
    else:
        for k, hint in (("layers", "e.g. layers = 96"), ("hidden", "e.g. hidden = 12288"),
                        ("heads", "e.g. heads = 96"), ("seq_len", "e.g. seq_len = 2048"),
                        ("vocab", "e.g. vocab = 51200")):
            _need(merged, k, "model", file, hint + " (or a preset)")
        if merged["hidden"] % merged["heads"]:
            raise ScenarioError(f"model.hidden = {merged['hidden']} must be divisible by "
                                f"model.heads = {merged['heads']}", **w("heads"))
        merged.setdefault("kv_heads", merged["heads"])
        if merged["heads"] % merged["kv_heads"]:
            raise ScenarioError(f"{merged['kv_heads']} must divide model.heads = "
                                f"{merged['heads']}", **w("kv_heads"))
        merged.setdefault("ffn_hidden", 4 * merged["hidden"])
    merged.pop("size", None)
    names = {f.name for f in fields(ModelSpec)}
    return ModelSpec(**{k: v for k, v in merged.items() if k in names})


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _try(n: int, limit: int = 8) -> str:
    return ", ".join(str(d) for d in _divisors(n)[:limit])


def scenario_from_dict(raw: dict, *, file: str | None = None, base_dir: str = ".") -> Scenario:
    """Validate a parsed TOML document (see module docstring)."""
    for k in raw:
        if k not in TOP_KEYS:
            raise ScenarioError(f"unknown top-level key{did_you_mean(k, TOP_KEYS)} accepted: "
                                + ", ".join(sorted(TOP_KEYS)), file=file, key=k)
    for t in ("model", "cluster"):
        if t not in raw:
            raise ScenarioError(f"missing table [{t}]", file=file, key=t)
    model = _model(raw, file, base_dir)
    tr = _read_table(raw, "training", file)
    par = _read_table(raw, "parallel", file)
    cluster = raw["cluster"]
    if not isinstance(cluster, dict):
        raise ScenarioError("must be a table [cluster]", file=file, key="cluster")
    cluster = dict(cluster)
    devices = _cluster_devices(cluster, file)

    if model.kind == "collective":
        tr.setdefault("global_batch", 1)
        par.setdefault("dp", devices)
    par.setdefault("dp", max(1, devices // (par.get("tp", 1) * par.get("pp", 1) * par.get("cp", 1))))
    if "schedule" not in par:
        par["schedule"] = "interleaved" if par.get("vpp", 1) > 1 else "1f1b"
    if "grad_dtype" not in tr:
        tr["grad_dtype"] = "fp32" if tr.get("precision", "bf16") in ("fp32", "bf16", "fp8") else "fp16"
    if "global_batch" not in tr:
        raise ScenarioError("missing; e.g. global_batch = 1536", file=file, key="training.global_batch")
    training = TrainingSpec(**tr)
    parallel = ParallelSpec(**par)
    name = raw.get("name", model.name or (Path(file).stem if file else "scenario"))
    if not isinstance(name, str):
        raise ScenarioError(f"{name!r} must be a string", file=file, key="name")
    sc = Scenario(name=name, file=file, model=model, training=training, parallel=parallel,
                  cluster=cluster, base_dir=base_dir)
    check_layout(sc, devices)
    return sc


def _cluster_devices(cluster: dict, file) -> int:
    """Devices in the cluster from the common keys (gpus, or nodes·gpus_per_node)."""
    for k in ("nodes", "gpus_per_node", "gpus"):
        if k in cluster:
            integer()(cluster[k], {"file": file, "key": f"cluster.{k}"})
    if "gpus" in cluster:
        return cluster["gpus"]
    if "dims" in cluster and isinstance(cluster["dims"], list):
        return math.prod(int(x) for x in cluster["dims"] if isinstance(x, int)) or 1
    if "nodes" in cluster:
        return cluster["nodes"] * cluster.get("gpus_per_node", 8)
    raise ScenarioError("missing the cluster size; give nodes (and gpus_per_node) or gpus",
                        file=file, key="cluster.nodes")


def check_layout(sc: Scenario, devices: int) -> None:
    """Divisibility and size rules of a layout (Megatron-LM's own argument checks)."""
    m, t, p = sc.model, sc.training, sc.parallel
    f = sc.file
    if m.kind == "collective":
        if p.world > devices:
            raise ScenarioError(f"parallel.dp = {p.dp} ranks is larger than the cluster's "
                                f"{devices} devices", file=f, key="parallel.dp")
        return
    if t.global_batch % (p.dp * t.micro_batch):
        raise ScenarioError(f"training.global_batch = {t.global_batch} must be divisible by "
                            f"dp·micro_batch = {p.dp}·{t.micro_batch}", file=f,
                            key="training.global_batch")
    if m.kind == "transformer":
        if m.heads % p.tp:
            raise ScenarioError(f"parallel.tp = {p.tp}: must divide model.heads = {m.heads}; "
                                f"try {_try(m.heads)}", file=f, key="parallel.tp")
        if m.kv_heads % p.tp and p.tp % m.kv_heads:
            raise ScenarioError(f"parallel.tp = {p.tp}: must divide or be a multiple of "
                                f"model.kv_heads = {m.kv_heads}", file=f, key="parallel.tp")
        if p.cp > 1 and m.seq_len % (2 * p.cp):
            raise ScenarioError(f"parallel.cp = {p.cp}: 2·cp must divide model.seq_len = "
                                f"{m.seq_len}", file=f, key="parallel.cp")
        _check_stages(sc)
    elif m.kind == "mlp":
        n_layers = len(m.sizes) - 1
        if p.pp > n_layers:
            raise ScenarioError(f"parallel.pp = {p.pp}: the MLP has only {n_layers} layers",
                                file=f, key="parallel.pp")
        if p.tp > 1 and any(s % p.tp for s in m.sizes[1:-1]):
            raise ScenarioError(f"parallel.tp = {p.tp}: must divide the hidden widths "
                                f"{list(m.sizes[1:-1])}", file=f, key="parallel.tp")
    if p.world > devices:
        raise ScenarioError(f"dp·tp·pp·cp = {p.dp}·{p.tp}·{p.pp}·{p.cp} = {p.world} is larger "
                            f"than the cluster's {devices} devices", file=f, key="parallel")
    if p.world != devices and m.kind != "collective":
        raise ScenarioError(f"dp·tp·pp·cp = {p.dp}·{p.tp}·{p.pp}·{p.cp} = {p.world} must equal "
                            f"the cluster's {devices} devices; try dp = {devices // (p.tp*p.pp*p.cp)}"
                            if devices % (p.tp * p.pp * p.cp) == 0 else
                            f"dp·tp·pp·cp = {p.world} must equal the cluster's {devices} devices",
                            file=f, key="parallel.dp")
    if p.schedule == "interleaved" and p.vpp < 2:
        raise ScenarioError("schedule = 'interleaved' needs parallel.vpp >= 2", file=f,
                            key="parallel.vpp")
    if p.vpp > 1 and p.schedule != "interleaved":
        raise ScenarioError(f"vpp = {p.vpp} needs schedule = 'interleaved'", file=f,
                            key="parallel.schedule")
    if p.schedule == "interleaved" and sc.microbatches % p.pp:
        raise ScenarioError(f"the interleaved schedule needs micro-batches per pipeline "
                            f"({sc.microbatches}) to be a multiple of parallel.pp = {p.pp}",
                            file=f, key="training.global_batch")
    if p.ep > 1 and (m.num_experts % p.ep or p.dp % p.ep):
        raise ScenarioError(f"parallel.ep = {p.ep}: must divide model.num_experts = "
                            f"{m.num_experts} and parallel.dp = {p.dp}", file=f, key="parallel.ep")
    if p.grad_sync == "ps" and p.zero:
        raise ScenarioError("zero > 0 shards over all-reduce groups; it cannot be combined with "
                            "grad_sync = 'ps'", file=f, key="parallel.zero")


def _check_stages(sc: Scenario) -> None:
    m, p, f = sc.model, sc.parallel, sc.file
    chunks = p.pp * p.vpp
    if p.stage_layers:
        if len(p.stage_layers) != chunks:
            raise ScenarioError(f"has {len(p.stage_layers)} entries; needs pp·vpp = {chunks}",
                                file=f, key="parallel.stage_layers")
        if sum(p.stage_layers) != m.layers:
            raise ScenarioError(f"sums to {sum(p.stage_layers)}; must sum to model.layers = "
                                f"{m.layers}", file=f, key="parallel.stage_layers")
    elif m.layers % chunks:
        raise ScenarioError(f"parallel.pp = {p.pp}" + (f" with vpp = {p.vpp}" if p.vpp > 1 else "")
                            + f": pp·vpp must divide model.layers = {m.layers}; try pp in "
                            f"{_try(m.layers)} or give parallel.stage_layers", file=f,
                            key="parallel.pp")


def stage_layers(sc: Scenario) -> tuple[int, ...]:
    """Layers per model chunk (pp·vpp chunks, in pipeline order)."""
    p = sc.parallel
    if p.stage_layers:
        return p.stage_layers
    chunks = p.pp * p.vpp
    return (sc.model.layers // chunks,) * chunks


def with_parallel(sc: Scenario, **changes) -> Scenario:
    """A copy of the scenario with parallel keys changed (no re-validation)."""
    return replace(sc, parallel=replace(sc.parallel, **changes))
