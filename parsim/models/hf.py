"""Read a Hugging Face ``config.json`` into parsim model keys.

Users already have these files; the keys follow the transformers library's
config classes (GPT2Config: n_layer, n_embd, n_head, n_positions, n_inner;
LlamaConfig / MistralConfig / Qwen2Config: num_hidden_layers, hidden_size,
num_attention_heads, num_key_value_heads, intermediate_size,
max_position_embeddings, tie_word_embeddings).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ScenarioError

# parsim key -> candidate Hugging Face keys, first match wins
_KEYS = {
    "layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "hidden": ("hidden_size", "n_embd", "d_model"),
    "heads": ("num_attention_heads", "n_head"),
    "kv_heads": ("num_key_value_heads", "multi_query_group_num"),
    "ffn_hidden": ("intermediate_size", "n_inner", "ffn_dim"),
    "seq_len": ("max_position_embeddings", "n_positions", "seq_length"),
    "vocab": ("vocab_size", "padded_vocab_size"),
    "num_experts": ("num_local_experts", "num_experts"),
    "experts_per_token": ("num_experts_per_tok",),
}
_GATED = ("silu", "swiglu", "swish")


def read_hf_config(path: Path, *, file: str | None = None, key: str = "model.hf_config") -> dict:
    """Return model keys from a Hugging Face config.json (missing keys are left out)."""
    try:
        cfg = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ScenarioError(f"file {str(path)!r} not found; give the path of a Hugging Face "
                            "config.json", file=file, key=key) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ScenarioError(f"{str(path)!r} is not valid JSON ({err})", file=file, key=key) from None
    if not isinstance(cfg, dict):
        raise ScenarioError(f"{str(path)!r} is not a JSON object", file=file, key=key)
    out: dict = {"kind": "transformer"}
    for ours, theirs in _KEYS.items():
        for k in theirs:
            if cfg.get(k) is not None:
                out[ours] = int(cfg[k])
                break
    act = str(cfg.get("hidden_act", cfg.get("activation_function", ""))).lower()
    llama_like = any(g in act for g in _GATED)
    out["gated_mlp"] = llama_like
    out["norm"] = "rmsnorm" if "rms_norm_eps" in cfg else "layernorm"
    out["bias"] = bool(cfg.get("attention_bias", not llama_like))
    out["tied_embeddings"] = bool(cfg.get("tie_word_embeddings", not llama_like))
    out["position"] = "rope" if "rope_theta" in cfg or llama_like else "learned"
    missing = [k for k in ("layers", "hidden", "heads", "vocab") if k not in out]
    if missing:
        raise ScenarioError(f"{str(path)!r} lacks {', '.join(missing)} (looked for "
                            + "; ".join(f"{m}: {'/'.join(_KEYS[m])}" for m in missing) + ")",
                            file=file, key=key)
    return out
