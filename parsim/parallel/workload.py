"""Per-op costs of one training step: what every engine charges.

:func:`step_costs` turns a scenario, a device and a cluster into the figures the
analytical engine composes in closed form and the lowering turns into Program ops:
per model chunk and micro-batch, forward and backward compute and tensor-parallel
communication; the pipeline send per micro-batch; the gradient synchronisation and
optimizer step per stage. Computing them once here is what makes the engines agree.

Tensor-parallel traffic per layer (Megatron-LM, Shoeybi et al. 2019, sec. 3;
Korthikanti et al. 2022, sec. 4.2.2): two all-reduces of b·s·h activations in the
forward pass and two in the backward; with sequence parallelism each becomes a
reduce-scatter plus an all-gather of the same bytes, which a ring prices the same.
Pipeline sends carry b·s·h activations, split over the TP ranks' NICs by the
scatter/gather optimisation (Narayanan et al. 2021, sec. 4.1) unless
``parallel.scatter_gather`` is off (DeepSpeed's pipeline engine sends the whole tensor).

Tensor-core ops (GEMMs, attention) run at the device's microbenchmark rate times
``Device.sustained_frac``, the fraction a GPU sustains inside a training step (power-limited
clocks with communication alongside); memory-bound kernels keep their rate. With tied
embeddings and pipelining, the first and last stages also all-reduce the word-embedding
gradients (:func:`_tied_embedding_sync_s`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..cost import compute, memory, placement
from ..errors import ScenarioError
from ..models import transformer as tfm
from ..scenario import Scenario, stage_layers
from . import ranks as rk

ACT_BYTES = 2  # 16-bit activations on the wire


@dataclass(frozen=True)
class ChunkCosts:
    """One model chunk (layers on one device for one virtual stage), one micro-batch."""
    fwd_s: float          # compute
    bwd_s: float          # compute, recompute included
    tp_fwd_s: float       # TP (+ CP, EP) communication on the critical path
    tp_bwd_s: float
    fwd_flops: float
    layers: int


@dataclass(frozen=True)
class StepCosts:
    chunks: tuple[ChunkCosts, ...]      # pp·vpp chunks in pipeline order
    p2p_bytes: float                    # per rank per micro-batch per boundary
    p2p_s: float
    grad_sync_s: tuple[float, ...]      # per stage: DP/ZeRO/PS gradient sync (whole)
    grad_sync_kind: str                 # "dp" or "ps"
    grad_sync_algorithm: str
    param_gather_s: tuple[float, ...]   # per stage: ZeRO-1/2 parameter all-gather
    zero3_gather_s: tuple[float, ...]   # per stage per micro-batch: ZeRO-3 fwd+bwd gathers
    optimizer_s: tuple[float, ...]      # per stage
    buckets: int
    params: tuple[float, ...] = ()      # per stage, per device (after TP/EP splits)
    grad_bytes: int = 4                 # bytes per gradient element on the wire
    weight_bytes: int = 2               # bytes per weight on the wire (ZeRO gathers)


# Cross-entropy over the (vocab-parallel) logits, in fp32 as Megatron-LM's
# ``vocab_parallel_cross_entropy`` and torch autocast (log_softmax on its fp32 list) run it;
# bytes per logit element: forward the upcast (read 2, write 4), max (4), subtract (4 + 4),
# exp (4 + 4), sum (4), normalise (4 + 4) = 38; backward scale the saved softmax (4 + 4) and
# cast the gradient for the output GEMM (4 + 2) = 14. At GPT-2's vocabulary this is a few
# per cent of a small model's step, nothing for a large one.
CE_FWD_BYTES, CE_BWD_BYTES = 38, 14


def _compute_dtype(sc: Scenario) -> str:
    return sc.training.precision


def _logits_dtype(sc: Scenario) -> str:
    """The output head runs in BF16 in FP8 training: Transformer Engine's FP8 autocast
    covers TE modules, and Megatron-Core's ``GPTModel.output_layer`` is a plain
    ``tensor_parallel.ColumnParallelLinear`` (megatron/core/models/gpt/gpt_model.py)."""
    return "bf16" if sc.training.precision == "fp8" else sc.training.precision


def _sustained(device, parts: dict) -> dict:
    """Layer part times with the tensor-core ops (GEMMs, attention) at the rate the device
    sustains in a training step (``Device.sustained_frac``); memory-bound parts unchanged."""
    return {k: (v if k in compute.MEMORY_BOUND_PARTS else v / device.sustained_frac)
            for k, v in parts.items()}


def chunk_costs(sc: Scenario, device, cluster, layers: int, first: bool, last: bool) -> ChunkCosts:
    """Costs of ``layers`` transformer layers (+ embedding / logits at the ends)."""
    m, t, p = sc.model, sc.training, sc.parallel
    b, s = t.micro_batch, m.seq_len // p.cp
    lt = compute.transformer_layer_times(
        device, micro_batch=b, seq=s, hidden=m.hidden, heads=m.heads, kv_heads=m.kv_heads,
        ffn_hidden=m.ffn_hidden * min(m.experts_per_token, m.num_experts),
        gated_mlp=m.gated_mlp, tp=p.tp, dtype=_compute_dtype(sc),
        sequence_parallel=p.sequence_parallel, flash=t.flash_attention,
        unpadded=t.unpadded_attention)
    # tensor-core ops at the rate sustained inside a training step (Device.sustained_frac)
    fwd_parts, bwd_parts = _sustained(device, lt["parts"]), _sustained(device, lt["bwd_parts"])
    attn = fwd_parts.get("attention", 0.0)
    attn_fwd = attn * p.cp   # ring attention: s/cp queries × s keys
    fwd = sum(fwd_parts.values()) + attn_fwd - attn
    bwd = sum(bwd_parts.values()) + 2.5 * (attn_fwd - attn)
    if t.recompute == "full":
        bwd += fwd
    elif t.recompute == "selective":
        bwd += attn_fwd
    fwd, bwd = fwd * layers, bwd * layers
    flops = tfm.layer_fwd_flops(m, b, m.seq_len) / (p.tp * p.cp) * layers
    if last:
        vocab_tp = -(-m.vocab // p.tp)
        lg = compute.gemm_time_s(device, b * s, vocab_tp, m.hidden,
                                 _logits_dtype(sc)) / device.sustained_frac
        logits = b * s * vocab_tp
        fwd = fwd + lg + compute.memory_time_s(device, logits * CE_FWD_BYTES)
        bwd = bwd + 2 * lg + compute.memory_time_s(device, logits * CE_BWD_BYTES)
        flops += tfm.logits_fwd_flops(m, b, m.seq_len) / (p.tp * p.cp)
    if first:
        emb = compute.memory_time_s(device, 2 * b * s * m.hidden * ACT_BYTES)
        fwd, bwd = fwd + emb, bwd + emb
    # TP communication per layer: 2 all-reduces forward, 2 backward (+2 on recompute)
    tp_ranks = rk.tp_group(p)
    act = b * s * m.hidden * ACT_BYTES
    t_ar, _ = placement.group_time_s(cluster, tp_ranks, "all_reduce", act, "ring")
    per_layer_fwd = 2 * t_ar
    per_layer_bwd = 2 * t_ar + (2 * t_ar if t.recompute == "full" else 0.0)
    if p.ep > 1 and m.num_experts > 1:
        ep_ranks = rk.dp_group(p)[: p.ep]
        t_a2a, _ = placement.group_time_s(cluster, ep_ranks, "all_to_all",
                                          act * m.experts_per_token, "ring")
        per_layer_fwd += 2 * t_a2a
        per_layer_bwd += 2 * t_a2a
    if p.cp > 1:   # ring attention: K,V blocks travel cp-1 steps, hidden behind attention
        kv = 2 * b * s * m.kv_heads * m.head_dim // max(1, min(p.tp, m.kv_heads)) * ACT_BYTES
        t_kv, _ = placement.group_time_s(cluster, rk.cp_group(p), "all_gather", kv * p.cp, "ring")
        per_layer_fwd += max(0.0, t_kv - attn_fwd)
        per_layer_bwd += max(0.0, 2 * t_kv - 2.5 * attn_fwd)
    return ChunkCosts(fwd, bwd, per_layer_fwd * layers, per_layer_bwd * layers, flops, layers)


def mlp_chunk_costs(sc: Scenario, device, cluster, widths) -> ChunkCosts:
    """Dense layers ``widths`` (in, ..., out) split column/row-wise over TP."""
    b, p = sc.training.micro_batch, sc.parallel
    dtype = _compute_dtype(sc)
    fwd = bwd = flops = 0.0
    tp_f = tp_b = 0.0
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        t = compute.gemm_time_s(device, b, max(1, n_out // p.tp), n_in, dtype) / device.sustained_frac
        fwd += t + compute.memory_time_s(device, 2 * b * n_out * 4)
        bwd += 2 * t + compute.memory_time_s(device, 3 * b * n_out * 4)
        flops += 2.0 * b * n_in * n_out / p.tp
        if p.tp > 1 and i % 2 == 1:   # a column/row pair ends in a partial-sum all-reduce
            t_ar, _ = placement.group_time_s(cluster, rk.tp_group(p), "all_reduce", b * n_out * 4)
            tp_f += t_ar
            tp_b += t_ar
    return ChunkCosts(fwd, bwd, tp_f, tp_b, flops, len(widths) - 1)


def _mlp_stage_widths(sizes, pp):
    layers = len(sizes) - 1
    per = [layers // pp + (1 if i < layers % pp else 0) for i in range(pp)]
    out, start = [], 0
    for n in per:
        out.append(sizes[start:start + n + 1])
        start += n
    return out


def _tied_embedding_sync_s(sc: Scenario, cluster, g_bytes: int) -> dict:
    """{stage: seconds} of the all-reduce of the tied word-embedding gradients between the
    first and the last pipeline stage, after the data-parallel reduction: Megatron-LM
    ``_allreduce_embedding_grads`` (the "embedding group" of ranks holding the input
    embedding and the output head; Shoeybi et al. 2019 / Narayanan et al. 2021 code) and
    DeepSpeed's pipeline engine ``ReduceTiedGrads``. Empty without pipelining or tying."""
    m, p = sc.model, sc.parallel
    if m.kind != "transformer" or p.pp < 2 or not m.tied_embeddings:
        return {}
    nbytes = m.vocab * m.hidden / p.tp * g_bytes
    group = [rk.rank_of(p, pp=0), rk.rank_of(p, pp=p.pp - 1)]
    t, _ = placement.group_time_s(cluster, group, "all_reduce", nbytes, "ring")
    return {0: t, p.pp - 1: t}


def step_costs(sc: Scenario, device, cluster) -> StepCosts:
    """All per-op costs of one step (see module docstring)."""
    m, t, p = sc.model, sc.training, sc.parallel
    n_chunks = p.pp * p.vpp
    if m.kind == "transformer":
        layers = stage_layers(sc)
        chunks = tuple(chunk_costs(sc, device, cluster, layers[c], c == 0, c == n_chunks - 1)
                       for c in range(n_chunks))
        act = t.micro_batch * (m.seq_len // p.cp) * m.hidden * ACT_BYTES
        params = [memory.stage_params(sc, s) for s in range(p.pp)]
    else:
        widths = _mlp_stage_widths(m.sizes, p.pp)
        chunks = tuple(mlp_chunk_costs(sc, device, cluster, w) for w in widths)
        act = t.micro_batch * 4 * (widths[0][-1] if p.pp > 1 else 0)
        params = [memory.mlp_params(w) / p.tp for w in widths]
    p2p_bytes = act / p.tp if p.tp > 1 and p.scatter_gather else act
    p2p_s = 0.0
    if p.pp > 1:
        src, dst = rk.rank_of(p, pp=0), rk.rank_of(p, pp=1)
        p2p_s = placement.p2p_time_s(cluster, src, dst, p2p_bytes)
    g_bytes = memory.DTYPE_BYTES[t.grad_dtype]
    w_bytes = memory.weight_bytes_per_param(t.precision)
    sync, gather, z3, opt, alg = [], [], [], [], "ring"
    kind = "ps" if p.grad_sync == "ps" else "dp"
    tied = _tied_embedding_sync_s(sc, cluster, g_bytes)
    for stage, n in enumerate(params):
        group = rk.dp_cp_group(p, pp=stage)
        gs = ga = zg = 0.0
        if kind == "ps":
            gs = placement.ps_time_s(cluster, group, n * g_bytes, p.ps_servers)
            if gs is None:
                raise ScenarioError("grad_sync = 'ps' needs a cluster with parameter servers; "
                                    "use topology = 'ps' (or a topology file with hosts)",
                                    file=sc.file, key="cluster.topology")
            alg = "ps"
        elif p.zero == 0:
            gs, alg = placement.group_time_s(cluster, group, "all_reduce", n * g_bytes, p.algorithm)
        else:
            if p.zero < 3 and p.zero_grad_reduce == "all_reduce":
                gs, alg = placement.group_time_s(cluster, group, "all_reduce", n * g_bytes,
                                                 p.algorithm)
            else:
                gs, alg = placement.group_time_s(cluster, group, "reduce_scatter", n * g_bytes,
                                                 "ring")
            ag, _ = placement.group_time_s(cluster, group, "all_gather", n * w_bytes, "ring")
            if p.zero >= 3:   # gather weights before forward and again before backward
                zg = 2 * ag
            else:
                ga = ag
        if kind == "dp" and stage in tied:   # word-embedding gradients, first <-> last stage
            gs += tied[stage]
        shard = len(group) if p.zero >= 1 else 1
        touched = n / shard * (24 + g_bytes + w_bytes)   # Adam: r/w master, m, v; r grad; w param
        if t.optimizer == "sgd":
            touched = n / shard * (8 + g_bytes + w_bytes + (8 if t.precision != "fp32" else 0))
        sync.append(gs)
        gather.append(ga)
        z3.append(zg)
        opt.append(compute.memory_time_s(device, touched))
    buckets = max(1, int(max(params) * g_bytes // t.bucket_size))
    return StepCosts(chunks, p2p_bytes, p2p_s, tuple(sync), kind, alg, tuple(gather), tuple(z3),
                     tuple(opt), buckets, tuple(params), g_bytes, w_bytes)
