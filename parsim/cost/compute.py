"""Roofline compute model: the time of GEMMs, attention and memory-bound ops on one device.

Every op is charged

.. math::  t = \\max\\left(\\frac{F}{P_{dtype}\\,\\eta},\\ \\frac{B}{W\\,\\eta_{mem}}\\right) + t_{launch}

F FLOPs, B bytes moved to and from device memory, P the device's dense peak for the
dtype (``device.peak_flops``), W its memory bandwidth (``device.mem_bw_Bps``), η the
fraction of peak the op reaches, η_mem = ``device.mem_eff``, t_launch =
``device.launch_s`` (a fixed cost per kernel). Source: Williams, Waterman, Patterson,
"Roofline", CACM 52(4), 2009. Every hardware figure comes from the ``Device``
(:mod:`parsim.hardware`); this module holds only algorithmic constants (bytes per
element, tile shapes, FLOP counts).

GEMM efficiency (GPUs): a GEMM's m×n output is cut into tiles of TM×TN, one thread
block each, and the blocks run in waves of one block per SM::

    tiles  = ceil(m/TM) · ceil(n/TN) · batch
    waves  = ceil(tiles / SMs)
    η_tile = m·n / (ceil(m/TM)·TM · ceil(n/TN)·TN)      (padding in edge tiles)
    η_wave = tiles / (waves · SMs)                       (idle SMs in the last wave)
    η      = gemm_eff(dtype) · η_tile · η_wave

maximised over the tiles 256×128, 128×256 and 128×128, as cuBLAS's heuristics choose
the tile that quantizes best; all three are taken to run equally fast per SM. A tile
edge longer than its dimension narrows to the next power of two (at least 16), so a
matrix-vector product is not charged a 128-wide tile.
``gemm_eff`` is the device's best-shape fraction of peak (no quantization loss).
Source: NVIDIA Deep Learning Performance Documentation, "Matrix Multiplication
Background User's Guide", sections "Tile Quantization" and "Wave Quantization"
(examples with 256×128 and 128×128 tiles on the 108-SM A100). Not modelled: split-K
and stream-K kernels, which lessen the loss for small m·n with large k, so such
GEMMs come out pessimistic. A CPU (``kind == "cpu"``, or ``sm_count == 0``) has no waves:
η = gemm_eff.

GEMM bytes: read A (m×k) and B (k×n), write C (m×n), each once. fp8 GEMMs read fp8
inputs and write a bf16 output (Transformer Engine's convention).
"""
from __future__ import annotations

import math

from ..errors import Infeasible

# Bytes per element: a property of the number format, not of the hardware.
DTYPE_BYTES = {"fp64": 8, "fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1}

# Output tiles (rows, cols) a GEMM kernel may use; see the module docstring.
GEMM_TILES = ((256, 128), (128, 256), (128, 128))
# A dimension smaller than a tile edge gets a narrower kernel (cuBLAS ships small-N/M kernels):
# the edge shrinks to the next power of two, but not below 16, the m16n8k16 tensor-core
# instruction's edge (PTX ISA, "Warp-level matrix multiply-accumulate instructions").
MIN_TILE = 16

# FlashAttention backward runs 5 matmuls of the forward's size (S = QK^T recomputed,
# dV, dP, dQ, dK) against the forward's 2: 2.5x the FLOPs. Dao 2023, FlashAttention-2, §4.1 (FLOP count).
FLASH_BWD_FLOP_RATIO = 2.5

# Unfused attention streams the (b, heads, s, s) score tensor through memory: softmax
# reads and writes it, dropout reads and writes it (4 passes); backward the same count.
# Source: the activation memory terms of Korthikanti et al. 2022, §4.1 (scores, softmax
# output and dropout mask are each stored as separate s×s tensors).
UNFUSED_SCORE_PASSES = 4


def gemm_efficiency(device, m: int, n: int, dtype: str, batch: int = 1) -> float:
    """Fraction of peak a (batch of) m×n-output GEMM reaches: gemm_eff · η_tile · η_wave.

    >>> from parsim.hardware import get_device
    >>> a100 = get_device("a100-80gb")          # 108 SMs, gemm_eff 0.869
    >>> gemm_efficiency(a100, 128 * 108, 128, "bf16")   # 108 tiles of 128x128: one full wave
    0.869
    >>> round(gemm_efficiency(a100, 128 * 109, 128, "bf16") / 0.869, 6)  # 109 tiles: 2 waves
    0.50463
    """
    eff = device.gemm_eff_for(dtype)
    if device.kind == "cpu" or device.sm_count == 0:
        return eff
    return eff * max(_quantization(m, n, batch, tm, tn, device.sm_count) for tm, tn in GEMM_TILES)


def _quantization(m, n, batch, tm, tn, sms):
    """η_tile · η_wave for one tile shape, its edges narrowed for thin matrices."""
    tm, tn = _narrow(tm, m), _narrow(tn, n)
    tiles_m, tiles_n = math.ceil(m / tm), math.ceil(n / tn)
    tiles = tiles_m * tiles_n * batch
    waves = math.ceil(tiles / sms)
    tile_eff = (m * n) / (tiles_m * tm * tiles_n * tn)
    wave_eff = tiles / (waves * sms)
    return tile_eff * wave_eff


def _narrow(tile, dim):
    """Tile edge for a dimension: the next power of two >= dim, between MIN_TILE and tile."""
    return min(tile, max(MIN_TILE, 1 << max(0, math.ceil(math.log2(max(dim, 1))))))


def gemm_time_s(device, m: int, n: int, k: int, dtype: str, batch: int = 1) -> float:
    """Seconds for ``batch`` GEMMs C(m×n) = A(m×k)·B(k×n) in ``dtype``.

    F = 2·m·n·k·batch; B = batch·((m·k + k·n)·e_in + m·n·e_out);
    t = max(F / (P·η), B / (W·η_mem)) + t_launch, η from :func:`gemm_efficiency`.
    A GEMM with a zero dimension costs nothing (no kernel).

    >>> from parsim.hardware import get_device
    >>> a100 = get_device("a100-80gb")
    >>> t = gemm_time_s(a100, 8192, 8192, 8192, "bf16")
    >>> # 4096 tiles of 128x128 -> 38 waves of 108 SMs: eta = 0.869 * 4096/4104
    >>> expected = 2 * 8192**3 / (312e12 * 0.869 * 4096 / 4104) + 3e-6
    >>> abs(t - expected) / expected < 1e-12
    True
    """
    if min(m, n, k, batch) < 0:
        raise ValueError(f"GEMM dimensions must be non-negative, got m={m} n={n} k={k} batch={batch}")
    if m * n * k * batch == 0:
        return 0.0
    device.check_dtype(dtype)
    e_in = DTYPE_BYTES[dtype]
    e_out = DTYPE_BYTES["bf16"] if dtype == "fp8" else e_in
    flops = 2.0 * m * n * k * batch
    nbytes = batch * ((m * k + k * n) * e_in + m * n * e_out)
    t_compute_s = flops / (device.peak_flops[dtype] * gemm_efficiency(device, m, n, dtype, batch))
    t_memory_s = nbytes / (device.mem_bw_Bps * device.mem_eff)
    return max(t_compute_s, t_memory_s) + device.launch_s


def memory_time_s(device, nbytes: float) -> float:
    """Seconds for a memory-bound kernel moving ``nbytes`` (reads plus writes).

    t = B / (W·η_mem) + t_launch; 0 for 0 bytes (no kernel). For layer norm, softmax,
    dropout, residual adds, activations, optimizer steps.

    >>> from parsim.hardware import get_device
    >>> a100 = get_device("a100-80gb")           # 2039 GB/s, mem_eff 0.88, 3 us launch
    >>> round(memory_time_s(a100, 2039e9 * 0.88 * 1e-3), 9)   # 1 ms of traffic + launch
    0.001003
    """
    if nbytes < 0:
        raise ValueError(f"bytes must be non-negative, got {nbytes}")
    if nbytes == 0:
        return 0.0
    return nbytes / (device.mem_bw_Bps * device.mem_eff) + device.launch_s


def attention_flops(batch: int, heads: int, seq: int, head_dim: int, causal: bool = False) -> float:
    """Forward FLOPs of softmax(QK^T)V: 4·b·heads·s²·d (QK^T and PV, 2·s²·d each).

    Halved when ``causal`` and the kernel skips the fully masked blocks, as FlashAttention-2
    does (Dao 2023, FlashAttention-2, §3.1.1 and the FLOP count of §4.1).

    >>> attention_flops(1, 1, 4, 2)             # 4 * 1 * 1 * 16 * 2
    128.0
    >>> attention_flops(1, 1, 4, 2, causal=True)
    64.0
    """
    flops = 4.0 * batch * heads * seq * seq * head_dim
    return flops / 2 if causal else flops


def attention_time_s(device, batch: int, heads: int, seq: int, head_dim: int, dtype: str,
                     causal: bool = True, flash: bool = True) -> float:
    """Forward seconds of self-attention for ``heads`` heads on one device.

    Flash (``flash`` and ``device.attn_eff`` set and a 16-bit ``dtype``): one fused
    kernel, F = :func:`attention_flops` (causal halves it), B = Q, K, V read and O written
    (4·b·heads·s·d elements), η = ``device.attn_eff``. Otherwise unfused: the QK^T and PV
    GEMMs (:func:`gemm_time_s`, batch = b·heads; no causal saving) plus
    ``UNFUSED_SCORE_PASSES`` passes over the s×s scores (:func:`memory_time_s`).
    Sources: Dao et al. 2022 (FlashAttention), Dao 2023 (FlashAttention-2).

    >>> from parsim.hardware import get_device
    >>> a100 = get_device("a100-80gb")                         # attn_eff 0.62
    >>> t = attention_time_s(a100, 1, 1, 4096, 128, "bf16")     # 4*4096^2*128 / 2 FLOPs
    >>> round((t - 3e-6) * 312e12 * 0.62 / (2 * 4096**2 * 128), 12)
    1.0
    """
    if _uses_flash(device, dtype, flash):
        device.check_dtype(dtype)
        flops = attention_flops(batch, heads, seq, head_dim, causal)
        nbytes = 4.0 * batch * heads * seq * head_dim * DTYPE_BYTES[dtype]
        return _fused_time_s(device, flops, nbytes, dtype)
    scores_bytes = float(batch) * heads * seq * seq * DTYPE_BYTES[dtype]
    return (gemm_time_s(device, seq, seq, head_dim, dtype, batch=batch * heads)      # S = QK^T
            + gemm_time_s(device, seq, head_dim, seq, dtype, batch=batch * heads)    # O = PV
            + memory_time_s(device, UNFUSED_SCORE_PASSES * scores_bytes))


def attention_bwd_time_s(device, batch: int, heads: int, seq: int, head_dim: int, dtype: str,
                         causal: bool = True, flash: bool = True) -> float:
    """Backward seconds of self-attention (same arguments as :func:`attention_time_s`).

    Flash: ``FLASH_BWD_FLOP_RATIO`` (2.5) × the forward FLOPs at ``attn_eff``; bytes: Q, K,
    V, O, dO read and dQ, dK, dV written (8·b·heads·s·d elements). Unfused: each GEMM
    twice (data and weight-side gradients) plus the score passes again.

    >>> from parsim.hardware import get_device
    >>> a100 = get_device("a100-80gb")
    >>> fwd = attention_time_s(a100, 1, 1, 4096, 128, "bf16") - 3e-6
    >>> bwd = attention_bwd_time_s(a100, 1, 1, 4096, 128, "bf16") - 3e-6
    >>> round(bwd / fwd, 12)
    2.5
    """
    if _uses_flash(device, dtype, flash):
        device.check_dtype(dtype)
        flops = FLASH_BWD_FLOP_RATIO * attention_flops(batch, heads, seq, head_dim, causal)
        nbytes = 8.0 * batch * heads * seq * head_dim * DTYPE_BYTES[dtype]
        return _fused_time_s(device, flops, nbytes, dtype)
    bh = batch * heads
    scores_bytes = float(batch) * heads * seq * seq * DTYPE_BYTES[dtype]
    return (gemm_time_s(device, seq, head_dim, seq, dtype, batch=bh)      # dQ = dS K
            + gemm_time_s(device, seq, head_dim, seq, dtype, batch=bh)    # dK = dS^T Q
            + gemm_time_s(device, seq, seq, head_dim, dtype, batch=bh)    # dP = dO V^T
            + gemm_time_s(device, seq, head_dim, seq, dtype, batch=bh)    # dV = P^T dO
            + memory_time_s(device, UNFUSED_SCORE_PASSES * scores_bytes))


def _uses_flash(device, dtype, flash):
    return flash and device.attn_eff is not None and dtype in ("fp16", "bf16")


def _fused_time_s(device, flops, nbytes, dtype):
    if flops == 0:
        return 0.0
    t_compute_s = flops / (device.peak_flops[dtype] * device.attn_eff)
    t_memory_s = nbytes / (device.mem_bw_Bps * device.mem_eff)
    return max(t_compute_s, t_memory_s) + device.launch_s


# --- one transformer layer -------------------------------------------------------------------

# Bytes moved per element by the memory-bound kernels of a Megatron-style layer (element size e,
# plus 1-byte dropout masks). Forward: layer norm reads x and writes y (2); the fused
# bias-dropout-add reads x and the residual and writes the sum (3) and a mask; GeLU reads and
# writes (2); SwiGLU reads gate and up and writes one (3). Backward: layer norm reads x and dy
# and writes dx (3); dropout-add reads dy and writes dx (2) and reads the mask; GeLU reads x
# and dy and writes dx (3); SwiGLU reads gate, up and dy and writes dgate and dup (5).
# Source: the kernels Megatron-LM fuses (fused_bias_dropout_add, fused layer norm,
# bias_gelu / swiglu) as counted in Korthikanti et al. 2022, §4.1.
_LN_PASSES = {"fwd": 2, "bwd": 3}
_DROPOUT_ADD_PASSES = {"fwd": 3, "bwd": 2}
_ACT_PASSES = {("gelu", "fwd"): 2, ("gelu", "bwd"): 3, ("swiglu", "fwd"): 3, ("swiglu", "bwd"): 5}
_MASK_BYTES = 1
# Layer parts bound by memory bandwidth, not by the tensor cores.
MEMORY_BOUND_PARTS = ("elementwise", "fp8_cast")


def transformer_layer_times(device, *, micro_batch: int, seq: int, hidden: int, heads: int,
                            kv_heads: int, ffn_hidden: int, gated_mlp: bool, tp: int, dtype: str,
                            sequence_parallel: bool, causal: bool = True, flash: bool = True,
                            unpadded: bool = False) -> dict:
    """Forward and backward seconds of one transformer layer on one tensor-parallel rank.

    Shapes on a rank (b micro-batch, s sequence, h hidden, a heads, g kv heads, d = h/a,
    f ffn_hidden, t tensor-parallel degree; Megatron column/row-parallel split):

    * qkv: GEMM m = b·s, k = h, n = (a + 2g)·d/t
    * attention: flash attention over a/t heads (:func:`attention_time_s`)
    * proj: GEMM m = b·s, k = h/t, n = h
    * mlp: fc1 m = b·s, k = h, n = f/t (2f/t gated: gate and up fused); fc2 k = f/t, n = h
    * elementwise: 2 layer norms and 2 bias-dropout-adds on b·s rows of h (b·s/t rows
      with sequence parallelism), the activation on b·s × f/t (:func:`memory_time_s`);
      with ``unpadded`` also the packing of q, k, v for a varlen flash kernel
      (:func:`_unpad_bytes`)

    Backward: each GEMM (m, n, k) becomes its data gradient (m, k, n) and weight gradient
    (k, n, m), the same FLOPs twice but quantized on their own shapes; attention
    :func:`attention_bwd_time_s` (2.5× the forward FLOPs); the elementwise kernels'
    backward (byte counts beside ``_LN_PASSES``).

    With g < t the key/value heads are replicated (one per rank), as in Megatron-LM.
    ``dtype`` "fp8" runs the GEMMs at the fp8 peak and everything else in bf16, and adds
    the part ``fp8_cast`` (the quantization of GEMM operands, see ``_FP8_CAST_BYTES``).

    Returns ``{"fwd_s", "bwd_s", "fwd_flops", "parts", "bwd_parts"}``; ``parts`` and
    ``bwd_parts`` map qkv/attention/proj/mlp/elementwise to seconds. ``fwd_flops`` counts
    all GEMMs and non-causal attention (4·b·s²·h/t), the convention of Narayanan et al. 2021
    eq. 3: for GPT-style layers it is (24·b·s·h² + 4·b·s²·h)/t. Times charge the causal half.

    >>> from parsim.hardware import get_device
    >>> r = transformer_layer_times(get_device("a100-80gb"), micro_batch=1, seq=2048,
    ...     hidden=12288, heads=96, kv_heads=96, ffn_hidden=4 * 12288, gated_mlp=False, tp=8,
    ...     dtype="bf16", sequence_parallel=False)
    >>> r["fwd_flops"] == (24 * 2048 * 12288**2 + 4 * 2048**2 * 12288) / 8
    True
    >>> sorted(r["parts"])
    ['attention', 'elementwise', 'mlp', 'proj', 'qkv']
    """
    b, s, h, a, t = micro_batch, seq, hidden, heads, tp
    kv_per_rank = _kv_heads_per_rank(heads, kv_heads, tp)
    if h % a:
        raise ValueError(f"hidden = {h} must be a multiple of heads = {a}")
    if ffn_hidden % t:
        raise Infeasible(f"tensor parallelism {t} must divide ffn_hidden = {ffn_hidden}")
    d, rows = h // a, b * s
    gemm_dtype = dtype
    act_dtype = "bf16" if dtype == "fp8" else dtype
    fc1_n = (2 if gated_mlp else 1) * ffn_hidden // t
    gemms = {  # part -> [(m, n, k)] forward GEMMs on this rank
        "qkv": [(rows, (a // t + 2 * kv_per_rank) * d, h)],
        "proj": [(rows, h, h // t)],
        "mlp": [(rows, fc1_n, h), (rows, h, ffn_hidden // t)],
    }
    fwd, bwd = {}, {}
    for part, shapes in gemms.items():
        fwd[part] = sum(gemm_time_s(device, m, n, k, gemm_dtype) for m, n, k in shapes)
        bwd[part] = sum(gemm_time_s(device, m, k, n, gemm_dtype)      # dgrad: dX = dY W^T
                        + gemm_time_s(device, k, n, m, gemm_dtype)    # wgrad: dW = X^T dY
                        for m, n, k in shapes)
    attn_args = (device, b, a // t, s, d, act_dtype, causal, flash)
    fwd["attention"] = attention_time_s(*attn_args)
    bwd["attention"] = attention_bwd_time_s(*attn_args)
    norm_rows = rows // t if sequence_parallel else rows
    act = "swiglu" if gated_mlp else "gelu"
    for phase, out in (("fwd", fwd), ("bwd", bwd)):
        out["elementwise"] = _elementwise_s(device, phase, norm_rows, h, rows * ffn_hidden // t,
                                            act, DTYPE_BYTES[act_dtype])
        if unpadded and _uses_flash(device, act_dtype, flash):   # packing feeds a flash kernel
            out["elementwise"] += memory_time_s(device, _unpad_bytes(
                phase, rows, a // t * d, kv_per_rank * d, DTYPE_BYTES[act_dtype]))
    gemm_flops = sum(2.0 * m * n * k for shapes in gemms.values() for m, n, k in shapes)
    fwd_flops = gemm_flops + attention_flops(b, a // t, s, d, causal=False)
    order = ("qkv", "attention", "proj", "mlp", "elementwise")
    if dtype == "fp8":
        fwd["fp8_cast"], bwd["fp8_cast"] = _fp8_cast_s(device, rows, gemms)
        order += ("fp8_cast",)
    return {"fwd_s": sum(fwd[p] for p in order), "bwd_s": sum(bwd[p] for p in order),
            "fwd_flops": fwd_flops, "parts": {p: fwd[p] for p in order},
            "bwd_parts": {p: bwd[p] for p in order}}


# FP8 training quantizes GEMM operands on the fly (Transformer Engine autocast: "converting
# the input tensors to the low-precision format and computing their scaling factors", TE
# docs, "GEMM Speedups Across Precisions"); Hopper FP8 GEMMs take both operands K-major, so
# each cast writes the FP8 tensor and its transpose (TE cast_transpose): read 2 B, write
# 1 + 1 B per element. Forward: the inputs of proj and fc2 (the qkv and fc1 inputs are cast
# inside the fused LayerNorm-Linear, which writes FP8 in place of BF16); backward: the output
# gradient of every GEMM. FP8 weight copies are cached across micro-batches. Measured size
# of this overhead: 2.0 ms against 8.0 ms of FP8 GEMMs in a norm-FFN-norm block on H100
# (meta-pytorch/float8_experimental PR #298, "f8_overhead").
_FP8_CAST_BYTES = 4


def _fp8_cast_s(device, rows, gemms):
    """(forward, backward) seconds of the FP8 cast-transpose kernels of one layer."""
    (_, n_qkv, _), = gemms["qkv"]
    (_, n_proj, k_proj), = gemms["proj"]
    (_, n_fc1, _), (_, n_fc2, k_fc2) = gemms["mlp"]
    fwd = sum(memory_time_s(device, _FP8_CAST_BYTES * rows * k) for k in (k_proj, k_fc2))
    bwd = sum(memory_time_s(device, _FP8_CAST_BYTES * rows * n)
              for n in (n_qkv, n_proj, n_fc1, n_fc2))
    return fwd, bwd


def _kv_heads_per_rank(heads, kv_heads, tp):
    """Key/value heads each rank holds; Megatron replicates them when kv_heads < tp."""
    if heads % tp:
        raise Infeasible(f"tensor parallelism {tp} must divide heads = {heads}")
    if kv_heads <= 0 or heads % kv_heads:
        raise ValueError(f"kv_heads = {kv_heads} must divide heads = {heads}")
    if kv_heads % tp == 0:
        return kv_heads // tp
    if tp % kv_heads == 0:
        return 1
    raise Infeasible(f"tensor parallelism {tp} and kv_heads = {kv_heads}: one must divide the other")


def _unpad_bytes(phase, rows, q_width, kv_width, e):
    """Bytes moved packing attention inputs for a variable-length flash kernel: llm-foundry
    ``flash_attn_fn`` (mosaicml/llm-foundry, llmfoundry/models/layers/attention.py) gathers
    q, k and v with ``flash_attn.bert_padding.index_first_axis`` and scatters the output
    back with ``pad_input`` (zeros, then an indexed write).

    Forward: each gather reads and writes its tensor (2 passes over q, k, v); the output
    is zero-filled, read and written (3 passes over q). Backward: ``pad_input``'s gradient
    is a gather (2 passes over q); each gather's gradient zero-fills and scatters (3 passes
    over q, k, v). Per row of ``rows``: q is ``q_width`` elements, k and v ``kv_width``.

    >>> _unpad_bytes("fwd", 1, 4, 4, 2), _unpad_bytes("bwd", 1, 4, 4, 2)   # 9·4·2, 11·4·2
    (72, 88)
    """
    qkv = q_width + 2 * kv_width
    passes = 2 * qkv + 3 * q_width if phase == "fwd" else 2 * q_width + 3 * qkv
    return rows * passes * e


def _elementwise_s(device, phase, norm_rows, hidden, act_elems, act, e):
    """Seconds of the layer's memory-bound kernels (2 norms, 2 dropout-adds, 1 activation)."""
    norm_elems = norm_rows * hidden
    ln_bytes = _LN_PASSES[phase] * norm_elems * e
    dropout_bytes = _DROPOUT_ADD_PASSES[phase] * norm_elems * e + norm_elems * _MASK_BYTES
    act_bytes = _ACT_PASSES[(act, phase)] * act_elems * e
    return (2 * memory_time_s(device, ln_bytes) + 2 * memory_time_s(device, dropout_bytes)
            + memory_time_s(device, act_bytes))
