"""A tiny GPT-style language model with its backward pass written out (no autograd).

Pre-LN blocks as in nanoGPT's ``model.py``: for inputs tokens (b, T)::

    x   = wte[tokens] + wpe[:T]                                  # (b, T, d)
    x  += attn(ln1(x))      causal multi-head attention, n_heads heads of d/n_heads
    x  += mlp(ln2(x))       d -> d_ff (GELU, tanh form) -> d
    logits = lnf(x) Wout                                         # (b, T, V)
    loss = mean cross-entropy of logits[:, t] against tokens[:, t+1]

A batch is ``(b, T+1)`` token ids; the model reads the first T and predicts the last T.
Parameters are a flat dict (``wte``, ``wpe``, ``h{l}.ln1_g`` ... ``h{l}.b2``, ``lnf_g``,
``lnf_b``, ``Wout``). ``attn_core_*`` and ``mlp_core_*`` stop before the output bias, at
exactly the point where Megatron's tensor parallelism all-reduces partial sums, so
``blocks.py`` builds the sharded block from the same ops.

References: Vaswani et al. 2017; Radford et al. 2019 (GPT-2, pre-LN); Hendrycks & Gimpel
2016 (GELU); Karpathy, nanoGPT ``model.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parsim.numerics.mlp import linear_bwd, linear_fwd, xent_bwd, xent_fwd


@dataclass(frozen=True)
class LMConfig:
    """Sizes of the tiny language model (all small enough for finite differences)."""

    vocab: int = 16
    d_model: int = 16
    n_heads: int = 4
    n_layers: int = 2
    seq_len: int = 8
    d_ff: int = 0            # 0 means 4 * d_model

    @property
    def ff(self) -> int:
        return self.d_ff or 4 * self.d_model


# No key bias: it adds q·b_k to a whole row of scores, which softmax ignores, so its gradient
# is exactly zero and Adam would turn rounding noise into steps of size lr.
BLOCK_PARAMS = ("ln1_g", "ln1_b", "Wq", "bq", "Wk", "Wv", "bv", "Wo", "bo",
                "ln2_g", "ln2_b", "W1", "b1", "W2", "b2")


def init_lm(cfg: LMConfig, rng: np.random.Generator, dtype=np.float64) -> dict[str, np.ndarray]:
    """GPT-2 style init: weights N(0, 0.02), residual projections N(0, 0.02/sqrt(2L))."""
    d, f, V = cfg.d_model, cfg.ff, cfg.vocab
    std, res_std = 0.02 * 4, 0.02 * 4 / np.sqrt(2 * cfg.n_layers)   # x4: tiny widths
    p = {"wte": rng.standard_normal((V, d)) * std, "wpe": rng.standard_normal((cfg.seq_len, d)) * std}
    for l in range(cfg.n_layers):
        shapes = {"Wq": (d, d), "Wk": (d, d), "Wv": (d, d), "Wo": (d, d), "W1": (d, f), "W2": (f, d)}
        for name, shape in shapes.items():
            s = res_std if name in ("Wo", "W2") else std
            p[f"h{l}.{name}"] = rng.standard_normal(shape) * s
        for name, n in (("bq", d), ("bv", d), ("bo", d), ("b1", f), ("b2", d)):
            p[f"h{l}.{name}"] = np.zeros(n)
        for ln in ("ln1", "ln2"):
            p[f"h{l}.{ln}_g"], p[f"h{l}.{ln}_b"] = np.ones(d), np.zeros(d)
    p["lnf_g"], p["lnf_b"] = np.ones(d), np.zeros(d)
    p["Wout"] = rng.standard_normal((d, V)) * std
    return {k: v.astype(dtype) for k, v in p.items()}


def sub(params: dict, prefix: str) -> dict:
    """The entries of ``params`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


# ---- ops: forward and backward side by side --------------------------------------------

def embed_fwd(tokens, wte, wpe):
    """wte[tokens] + wpe[:T]: tokens (b, T) ints -> (b, T, d)."""
    return wte[tokens] + wpe[: tokens.shape[1]]


def embed_bwd(dx, tokens, wte_shape, wpe_shape):
    """Scatter-add dx (b, T, d) into d wte (V, d) and d wpe (T_max, d)."""
    dwte = np.zeros(wte_shape, dx.dtype)
    np.add.at(dwte, tokens.reshape(-1), dx.reshape(-1, dx.shape[-1]))
    dwpe = np.zeros(wpe_shape, dx.dtype)
    dwpe[: tokens.shape[1]] = dx.sum(0)
    return dwte, dwpe


def layernorm_fwd(x, g, b, eps=1e-5):
    """(x - mean) / sqrt(var + eps) · g + b over the last axis: (..., d) -> (..., d)."""
    mu = x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)   # (..., 1)
    xhat = (x - mu) * rstd
    return xhat * g + b, (xhat, rstd)


def layernorm_bwd(dy, cache, g):
    """dx (..., d), dg (d,), db (d,) of layer norm."""
    xhat, rstd = cache
    d = xhat.shape[-1]
    dg = (dy * xhat).reshape(-1, d).sum(0)
    db = dy.reshape(-1, d).sum(0)
    dxhat = dy * g
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    return dx, dg, db


_C = np.sqrt(2.0 / np.pi)


def gelu_fwd(x):
    """GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + np.tanh(_C * (x + 0.044715 * x ** 3)))


def gelu_bwd(dy, x):
    """dy · GELU'(x)."""
    t = np.tanh(_C * (x + 0.044715 * x ** 3))
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _C * (1.0 + 3 * 0.044715 * x * x))


def attention_fwd(q, k, v, n_heads):
    """Causal softmax(q k^T / sqrt(hd)) v over ``n_heads`` heads: (b, T, n_heads·hd) each."""
    b, T, dl = q.shape
    hd = dl // n_heads

    def heads(t):
        return t.reshape(b, T, n_heads, hd).transpose(0, 2, 1, 3)        # (b, nh, T, hd)

    qh, kh, vh = heads(q), heads(k), heads(v)
    s = qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(hd)                     # (b, nh, T, T)
    s = np.where(np.triu(np.ones((T, T), bool), 1), -np.inf, s)          # causal mask
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)                                        # (b, nh, T, T)
    out = (p @ vh).transpose(0, 2, 1, 3).reshape(b, T, dl)               # (b, T, nh·hd)
    return out, (qh, kh, vh, p)


def attention_bwd(dout, cache):
    """dq, dk, dv (b, T, nh·hd) of causal attention."""
    qh, kh, vh, p = cache
    b, nh, T, hd = qh.shape
    do = dout.reshape(b, T, nh, hd).transpose(0, 2, 1, 3)                # (b, nh, T, hd)
    dp = do @ vh.transpose(0, 1, 3, 2)                                   # (b, nh, T, T)
    dv = p.transpose(0, 1, 3, 2) @ do
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) / np.sqrt(hd)        # masked: p = 0
    dq, dk = ds @ kh, ds.transpose(0, 1, 3, 2) @ qh

    def merge(t):
        return t.transpose(0, 2, 1, 3).reshape(b, T, nh * hd)

    return merge(dq), merge(dk), merge(dv)


def attn_core_fwd(h, p, n_heads):
    """Attention up to (not including) the output bias: h (b,T,d) -> (b,T,d) partial sum.

    With tensor parallelism ``p`` holds this rank's heads: Wq/Wk/Wv (d, d/t) columns,
    Wo (d/t, d) rows; the sum over ranks of the returned arrays is the full output."""
    q = linear_fwd(h, p["Wq"], p["bq"])                                  # (b, T, d/t)
    k = linear_fwd(h, p["Wk"])
    v = linear_fwd(h, p["Wv"], p["bv"])
    a, att = attention_fwd(q, k, v, n_heads)                             # (b, T, d/t)
    return linear_fwd(a, p["Wo"]), (h, a, att)


def attn_core_bwd(dz, cache, p):
    """dh (partial sum over ranks) and this rank's grads of attn_core."""
    h, a, att = cache
    g = {}
    da, g["Wo"], _ = linear_bwd(dz, a, p["Wo"])
    dq, dk, dv = attention_bwd(da, att)
    dh = 0.0
    for name, dt in (("q", dq), ("k", dk), ("v", dv)):
        dhi, g[f"W{name}"], db = linear_bwd(dt, h, p[f"W{name}"])
        if name != "k":
            g[f"b{name}"] = db
        dh = dh + dhi
    return dh, g


def mlp_core_fwd(h, p):
    """GELU MLP up to (not including) b2: (b,T,d) -> (b,T,d) partial sum over ranks."""
    a = linear_fwd(h, p["W1"], p["b1"])                                  # (b, T, ff/t)
    u = gelu_fwd(a)
    return linear_fwd(u, p["W2"]), (h, a, u)


def mlp_core_bwd(dz, cache, p):
    """dh (partial sum over ranks) and this rank's grads of mlp_core."""
    h, a, u = cache
    g = {}
    du, g["W2"], _ = linear_bwd(dz, u, p["W2"])
    dh, g["W1"], g["b1"] = linear_bwd(gelu_bwd(du, a), h, p["W1"])
    return dh, g


# ---- one block and the whole model (single device) -------------------------------------

def block_fwd(x, p, n_heads):
    """x + attn(ln1 x), then + mlp(ln2 x): (b, T, d) -> (b, T, d)."""
    h1, c1 = layernorm_fwd(x, p["ln1_g"], p["ln1_b"])
    z1, ca = attn_core_fwd(h1, p, n_heads)
    x1 = x + z1 + p["bo"]
    h2, c2 = layernorm_fwd(x1, p["ln2_g"], p["ln2_b"])
    z2, cm = mlp_core_fwd(h2, p)
    return x1 + z2 + p["b2"], (c1, ca, c2, cm)


def block_bwd(dy, cache, p):
    """dx and grads of one block."""
    c1, ca, c2, cm = cache
    g = {"b2": dy.reshape(-1, dy.shape[-1]).sum(0)}
    dh2, gm = mlp_core_bwd(dy, cm, p)
    dx1, g["ln2_g"], g["ln2_b"] = layernorm_bwd(dh2, c2, p["ln2_g"])
    dx1 = dx1 + dy
    g["bo"] = dx1.reshape(-1, dx1.shape[-1]).sum(0)
    dh1, ga = attn_core_bwd(dx1, ca, p)
    dx, g["ln1_g"], g["ln1_b"] = layernorm_bwd(dh1, c1, p["ln1_g"])
    return dx + dx1, {**g, **gm, **ga}


def forward(params, tokens, cfg: LMConfig):
    """Mean next-token loss on tokens (b, T+1) and the cache backward needs."""
    inp, tgt = tokens[:, :-1], tokens[:, 1:]                             # (b, T) each
    x = embed_fwd(inp, params["wte"], params["wpe"])                     # (b, T, d)
    caches = []
    for l in range(cfg.n_layers):
        x, c = block_fwd(x, sub(params, f"h{l}."), cfg.n_heads)
        caches.append(c)
    hf, cf = layernorm_fwd(x, params["lnf_g"], params["lnf_b"])
    logits = linear_fwd(hf, params["Wout"])                              # (b, T, V)
    loss, probs = xent_fwd(logits, tgt)
    return loss, (inp, tgt, caches, hf, cf, probs, logits.shape)


def backward(params, cache, cfg: LMConfig) -> dict[str, np.ndarray]:
    """Gradients of the mean loss with respect to every parameter."""
    inp, tgt, caches, hf, cf, probs, shape = cache
    g = {}
    dlogits = xent_bwd(probs, tgt, shape)
    dhf, g["Wout"], _ = linear_bwd(dlogits, hf, params["Wout"])
    dx, g["lnf_g"], g["lnf_b"] = layernorm_bwd(dhf, cf, params["lnf_g"])
    for l in reversed(range(cfg.n_layers)):
        dx, gl = block_bwd(dx, caches[l], sub(params, f"h{l}."))
        g.update({f"h{l}.{k}": v for k, v in gl.items()})
    g["wte"], g["wpe"] = embed_bwd(dx, inp, params["wte"].shape, params["wpe"].shape)
    return g


def loss_and_grads(params, tokens, cfg: LMConfig):
    """(mean loss, grads) of the language model on one batch; the single-device reference."""
    loss, cache = forward(params, tokens, cfg)
    return loss, backward(params, cache, cfg)
