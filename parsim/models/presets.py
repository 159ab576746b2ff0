"""Model presets: architecture hyper-parameters with their sources.

A scenario's ``model.preset`` fills in these keys; explicit keys override them.

Sources:
* GPT-2: Radford et al. 2019, Table 2 (vocab 50257, context 1024).
* GPT-3: Brown et al. 2020, "Language Models are Few-Shot Learners", Table 2.1
  (context 2048); vocab padded to 51200 as Megatron-LM does (Narayanan et al. 2021).
* Megatron weak-scaling series: Narayanan et al. 2021, "Efficient Large-Scale
  Language Model Training on GPU Clusters Using Megatron-LM", Table 1.
* Llama 2: Touvron et al. 2023, Table 1 and the released config.json files.
* Llama 3: Llama Team, "The Llama 3 Herd of Models", 2024, Table 3.
* The seed MLP 1000-500-100 is the example of the article parsim started from.
"""
from __future__ import annotations

_GPT = dict(kind="transformer", gated_mlp=False, bias=True, norm="layernorm",
            tied_embeddings=True, position="learned", seq_len=2048, vocab=51200)
_LLAMA = dict(kind="transformer", gated_mlp=True, bias=False, norm="rmsnorm",
              tied_embeddings=False, position="rope")


def _gpt(layers, hidden, heads, **kw):
    return {**_GPT, "layers": layers, "hidden": hidden, "heads": heads, **kw}


def _llama(layers, hidden, heads, kv_heads, ffn_hidden, vocab, seq_len):
    return {**_LLAMA, "layers": layers, "hidden": hidden, "heads": heads,
            "kv_heads": kv_heads, "ffn_hidden": ffn_hidden, "vocab": vocab, "seq_len": seq_len}


_GPT2 = dict(seq_len=1024, vocab=50257)

MODEL_PRESETS: dict[str, dict] = {
    "mlp-seed": {"kind": "mlp", "sizes": [1000, 500, 100]},
    "gpt2": _gpt(12, 768, 12, **_GPT2),
    "gpt2-medium": _gpt(24, 1024, 16, **_GPT2),
    "gpt2-large": _gpt(36, 1280, 20, **_GPT2),
    "gpt2-xl": _gpt(48, 1600, 25, **_GPT2),
    "gpt3-125m": _gpt(12, 768, 12),
    "gpt3-350m": _gpt(24, 1024, 16),
    "gpt3-760m": _gpt(24, 1536, 16),
    "gpt3-1.3b": _gpt(24, 2048, 16),
    "gpt3-2.7b": _gpt(32, 2560, 32),
    "gpt3-6.7b": _gpt(32, 4096, 32),
    "gpt3-13b": _gpt(40, 5120, 40),
    "gpt3-175b": _gpt(96, 12288, 96),
    # Narayanan et al. 2021, Table 1 (params, heads, hidden, layers)
    "megatron-1.7b": _gpt(24, 2304, 24),
    "megatron-3.6b": _gpt(30, 3072, 32),
    "megatron-7.5b": _gpt(36, 4096, 32),
    "megatron-18.4b": _gpt(40, 6144, 48),
    "megatron-39.1b": _gpt(48, 8192, 64),
    "megatron-76.1b": _gpt(60, 10240, 80),
    "megatron-145.6b": _gpt(80, 12288, 96),
    "megatron-310.1b": _gpt(96, 16384, 128),
    "megatron-529.6b": _gpt(105, 20480, 128),
    "megatron-1t": _gpt(128, 25600, 160),
    "llama2-7b": _llama(32, 4096, 32, 32, 11008, 32000, 4096),
    "llama2-13b": _llama(40, 5120, 40, 40, 13824, 32000, 4096),
    "llama2-70b": _llama(80, 8192, 64, 8, 28672, 32000, 4096),
    "llama3-8b": _llama(32, 4096, 32, 8, 14336, 128256, 8192),
    "llama3-70b": _llama(80, 8192, 64, 8, 28672, 128256, 8192),
    "llama3-405b": _llama(126, 16384, 128, 8, 53248, 128256, 8192),
}
