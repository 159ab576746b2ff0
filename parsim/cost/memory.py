"""Memory per device: weights, gradients, optimizer state, activations.

Bytes per parameter (mixed-precision Adam, Rajbhandari et al. 2020, "ZeRO", sec. 3.1):
16-bit weights (2) + gradients (2, or 4 when Megatron keeps fp32 main gradients)
+ fp32 master weights, momentum and variance (12). ZeRO stage 1 shards the
optimizer state over DP, stage 2 the gradients too, stage 3 the weights too
(Megatron's distributed optimizer is stage 1: 6 + 12/DP bytes with fp32 grads).

Activations per layer and micro-batch, 16-bit (Korthikanti et al. 2022, "Reducing
Activation Recomputation in Large Transformer Models", Table 2), with s sequence,
b micro-batch, h hidden, a heads, t tensor-parallel size:

    none, no parallelism      s·b·h·(34 + 5·a·s/h)
    tensor parallel           s·b·h·(10 + 24/t + 5·a·s/(h·t))
    tensor + sequence par.    s·b·h·(34 + 5·a·s/h) / t
    selective recompute       s·b·h·(10 + 24/t)   or 34·s·b·h/t with sequence parallel
    full recompute            2·s·b·h             (/t with sequence parallel)

With fused (flash) attention the s×s terms are never stored (Dao et al. 2022), as
with selective recompute. Here the 34 is counted from the shapes (11 attention + 19 MLP + 4 layer norms for
GPT), so GQA (K, V smaller) and gated MLPs (three matrices) follow the same rules.
Under 1F1B the first stage holds p micro-batches of its l/p layers, so the total is
l layers' worth whatever p is; interleaving multiplies it by 1 + (p-1)/(p·v);
GPipe holds all m micro-batches (Korthikanti et al. 2022, sec. 4.2.3).
"""
from __future__ import annotations

from ..models import transformer as tfm
from ..scenario import Scenario, stage_layers

DTYPE_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1}


def weight_bytes_per_param(precision: str) -> int:
    """Bytes of the weights the model computes with (FP8 training keeps bf16 weights)."""
    return 4 if precision == "fp32" else 2


def optimizer_bytes_per_param(optimizer: str, precision: str) -> int:
    """Adam: fp32 master (unless training in fp32) + momentum + variance; SGD: + momentum."""
    master = 0 if precision == "fp32" else 4
    return master + (8 if optimizer == "adam" else 4)


def layer_activation_bytes(sc: Scenario, recompute: str | None = None) -> float:
    """Activation bytes one layer keeps for one micro-batch on one TP rank (see module doc)."""
    m, p = sc.model, sc.parallel
    s = m.seq_len // p.cp
    b, h, a, t = sc.training.micro_batch, m.hidden, m.heads, p.tp
    f = m.ffn_hidden * min(m.experts_per_token, m.num_experts)
    sbh = s * b * h
    recompute = recompute or sc.training.recompute
    if recompute == "full":
        return 2 * sbh / (t if p.sequence_parallel else 1)
    attention = (7 + 4 * m.kv_heads / a) * sbh
    mlp = 3 * sbh + (6 if m.gated_mlp else 4) * s * b * f
    # softmax output, dropout mask and output: kept unless recomputed or fused away
    keep_scores = recompute == "none" and not sc.training.flash_attention
    scores = 5 * a * s * s * b if keep_scores else 0.0
    total = attention + mlp + 4 * sbh + scores
    if p.sequence_parallel:
        return total / t
    unsplit = 10 * sbh  # layer-norm inputs, the two block inputs, two dropout masks
    return unsplit + (total - unsplit) / t


def inflight_microbatches(sc: Scenario, stage: int) -> float:
    """Micro-batches whose activations stage ``stage`` holds at its peak."""
    p, m = sc.parallel, sc.microbatches
    if p.schedule == "gpipe":
        return m
    inflight = min(p.pp - stage, m)
    if p.schedule == "interleaved":
        inflight *= 1 + (p.pp - 1) / (p.pp * p.vpp)
    return inflight


def stage_params(sc: Scenario, stage: int) -> float:
    """Parameters held by one device of pipeline stage ``stage`` (after TP/EP splits)."""
    m, p = sc.model, sc.parallel
    chunks = stage_layers(sc)
    layers = sum(chunks[stage + k * p.pp] for k in range(p.vpp))
    dense = tfm.layer_params(m)
    expert = 0
    if m.num_experts > 1:
        expert = (3 if m.gated_mlp else 2) * m.hidden * m.ffn_hidden * m.num_experts
        dense -= expert
    n = layers * (dense / p.tp + expert / (p.tp * p.ep))
    emb = m.vocab * m.hidden / p.tp
    if stage == 0:
        n += emb + (m.seq_len * m.hidden if m.position == "learned" else 0)
    if stage == p.pp - 1 and (p.pp > 1 or not m.tied_embeddings):
        n += emb  # output head (a tied copy lives on the last stage when pp > 1)
    return n


def mlp_params(sizes) -> int:
    """Weights and biases of an MLP with the given layer widths."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def memory_per_device(sc: Scenario, capacity_bytes: float) -> dict:
    """Bytes per device for the stage that needs the most, by kind, with the capacity."""
    t, p = sc.training, sc.parallel
    w_b = weight_bytes_per_param(t.precision)
    g_b = DTYPE_BYTES[t.grad_dtype]
    o_b = optimizer_bytes_per_param(t.optimizer, t.precision)
    shard = p.dp * p.cp
    best = None
    stages = range(p.pp) if sc.model.kind == "transformer" else [0]
    for stage in stages:
        if sc.model.kind == "transformer":
            n = stage_params(sc, stage)
            acts = _transformer_activations(sc, stage)
        else:
            n = mlp_params(sc.model.sizes) / (p.tp * p.pp)
            acts = 4.0 * t.micro_batch * sum(sc.model.sizes) * inflight_microbatches(sc, stage) \
                if sc.model.kind == "mlp" else 0.0
        mem = {
            "params": n * w_b / (shard if p.zero >= 3 else 1),
            "grads": n * g_b / (shard if p.zero >= 2 else 1),
            "optimizer": n * o_b / (shard if p.zero >= 1 else 1),
            "activations": acts,
        }
        mem["total"] = sum(mem.values())
        mem["stage"] = stage
        if best is None or mem["total"] > best["total"]:
            best = mem
    best["capacity"] = capacity_bytes
    return best


def _transformer_activations(sc: Scenario, stage: int) -> float:
    m, p, t = sc.model, sc.parallel, sc.training
    chunks = stage_layers(sc)
    layers = sum(chunks[stage + k * p.pp] for k in range(p.vpp))
    acts = layers * layer_activation_bytes(sc) * inflight_microbatches(sc, stage)
    sbh = m.seq_len // p.cp * t.micro_batch * m.hidden
    if stage == 0:   # embedding dropout mask for the in-flight micro-batches
        acts += sbh * inflight_microbatches(sc, 0) / p.tp
    if stage == p.pp - 1:  # fp32 logits and the final layer-norm input (Korthikanti sec. 4.1)
        acts += 4 * sbh / p.tp * (1 + m.vocab / m.hidden)
    return acts
