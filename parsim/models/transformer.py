"""Parameter and FLOP counts of a decoder-only transformer.

Symbols: B global batch (sequences), s sequence length, l layers, h hidden size,
V vocabulary, f MLP inner size, a attention heads, g key/value heads, d = h/a.

FLOPs count a multiply-add as 2 and include only matrix multiplies, as Megatron-LM
does. For a GPT layer (f = 4h, g = a) the forward pass is 24·B·s·h² + 4·B·s²·h and
the logit layer 2·B·s·h·V, which gives Narayanan et al. 2021, eq. 3:

    model FLOPs     = 72·B·s·l·h²·(1 + s/(6h) + V/(12·l·h))   (fwd + bwd = 3× fwd)
    with full recompute 96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h)) (one more layer fwd)

Here the layer matrices are counted from the actual shapes, so GQA and gated
(SwiGLU) MLPs are handled too; for GPT shapes the two agree exactly.
"""
from __future__ import annotations

from ..scenario import ModelSpec


def layer_matmul_params(m: ModelSpec) -> int:
    """Weights of one layer's matrices: QKV, output projection, MLP.

    >>> from parsim.scenario import ModelSpec
    >>> layer_matmul_params(ModelSpec("transformer", hidden=4, heads=2, kv_heads=2, ffn_hidden=16))
    192
    """
    h, d = m.hidden, m.head_dim
    qkv = h * (h + 2 * m.kv_heads * d)
    proj = h * h
    mlp = (3 if m.gated_mlp else 2) * h * m.ffn_hidden
    return qkv + proj + mlp * m.num_experts


def layer_params(m: ModelSpec) -> int:
    """All weights of one layer: matrices, biases and norms.

    A GPT layer has 12h² + 13h (Narayanan et al. 2021, sec. 5.1).

    >>> from parsim.scenario import ModelSpec
    >>> layer_params(ModelSpec("transformer", hidden=8, heads=2, kv_heads=2, ffn_hidden=32))
    872
    """
    h, d = m.hidden, m.head_dim
    n = layer_matmul_params(m)
    if m.bias:
        n += (h + 2 * m.kv_heads * d) + h + (m.ffn_hidden + h) * m.num_experts
    n += (4 if m.norm == "layernorm" else 2) * h
    if m.num_experts > 1:
        n += h * m.num_experts  # router
    return n


def embedding_params(m: ModelSpec) -> int:
    """Input embedding, learned positions, final norm and (untied) output head."""
    n = m.vocab * m.hidden
    if m.position == "learned":
        n += m.seq_len * m.hidden
    if not m.tied_embeddings:
        n += m.vocab * m.hidden
    return n


def total_params(m: ModelSpec) -> int:
    """Parameters of the whole model.

    GPT-3 175B (96 layers, h = 12288, V = 51200, s = 2048): 174.6 billion.

    >>> from parsim.models.presets import MODEL_PRESETS
    >>> from parsim.scenario import ModelSpec
    >>> spec = dict(MODEL_PRESETS["gpt3-175b"], kv_heads=96, ffn_hidden=4 * 12288)
    >>> round(total_params(ModelSpec(**spec)) / 1e9, 1)
    174.6
    """
    final_norm = (2 if m.norm == "layernorm" else 1) * m.hidden
    return m.layers * layer_params(m) + embedding_params(m) + final_norm


def active_layer_matmul_params(m: ModelSpec) -> int:
    """Matrix weights one token passes through in one layer (top-k experts for MoE)."""
    h, d = m.hidden, m.head_dim
    mlp = (3 if m.gated_mlp else 2) * h * m.ffn_hidden
    return h * (h + 2 * m.kv_heads * d) + h * h + mlp * min(m.experts_per_token, m.num_experts)


def layer_fwd_flops(m: ModelSpec, batch: int, seq: int | None = None) -> float:
    """Forward FLOPs of one layer for ``batch`` sequences: 2·B·s·P + 4·B·s²·h.

    The second term is QKᵀ and attention·V over the full (unmasked) s×s score matrix,
    the convention of Narayanan et al. 2021.
    """
    s = seq or m.seq_len
    return 2.0 * batch * s * active_layer_matmul_params(m) + 4.0 * batch * s * s * m.hidden


def attention_core_fwd_flops(m: ModelSpec, batch: int, seq: int | None = None) -> float:
    """QKᵀ and attention·V forward FLOPs of one layer: 4·B·s²·h."""
    s = seq or m.seq_len
    return 4.0 * batch * s * s * m.hidden


def logits_fwd_flops(m: ModelSpec, batch: int, seq: int | None = None) -> float:
    """Output-layer forward FLOPs: 2·B·s·h·V."""
    return 2.0 * batch * (seq or m.seq_len) * m.hidden * m.vocab


def model_flops(m: ModelSpec, batch: int) -> float:
    """Model FLOPs per iteration (no recompute): 3 × forward (backward = 2 × forward).

    For GPT shapes this is 72·B·s·l·h²·(1 + s/(6h) + V/(12·l·h)) (Narayanan et al. 2021).
    """
    return 3.0 * (m.layers * layer_fwd_flops(m, batch) + logits_fwd_flops(m, batch))


def hardware_flops(m: ModelSpec, batch: int, recompute: str) -> float:
    """FLOPs the hardware executes, recompute included.

    full: one more forward of every layer: 96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h)) for GPT
    (Narayanan et al. 2021, eq. 3). selective: one more forward of the attention core
    QKᵀ/softmax·V (Korthikanti et al. 2022, sec. 4.3), 4·B·s²·h per layer.
    """
    extra = 0.0
    if recompute == "full":
        extra = m.layers * layer_fwd_flops(m, batch)
    elif recompute == "selective":
        extra = m.layers * attention_core_fwd_flops(m, batch)
    return model_flops(m, batch) + extra


def megatron_eq3_flops(batch: int, seq: int, layers: int, hidden: int, vocab: int) -> float:
    """Narayanan et al. 2021, eq. 3, as printed: 96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h)).

    >>> f"{megatron_eq3_flops(1536, 2048, 96, 12288, 51200):.4e}"
    '4.5110e+18'
    """
    B, s, l, h, V = batch, seq, layers, hidden, vocab
    return 96.0 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h))
