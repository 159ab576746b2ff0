"""Model blocks as SPMD programs over a tensor-parallel group (Megatron-LM splits).

A block runs on every rank of a TP group at once: it takes lists indexed by TP rank
(``shards[t]`` that rank's parameters, ``xs[t]`` its input) and a :class:`~parsim.
numerics.comm.Comm` for the partial-sum all-reduces. With tp = 1 the lists have one entry
and the all-reduce is the identity. Splits (Shoeybi et al. 2019, "Megatron-LM", §3):

* MLP layer i (``mlp_blocks``): even i with a partner is column-parallel (W (d_in, d_out/t),
  output sharded, ReLU local); odd i is row-parallel (W (d_in/t, d_out), partial sums
  all-reduced, then bias and ReLU); a last unpaired layer is replicated. Backward of a
  column layer all-reduces the input gradient (Megatron's "g" operator).
* Transformer block (``lm_blocks``): Wq/Wk/Wv split by columns (whole heads per rank), Wo by
  rows; W1 by columns, W2 by rows; layer norms and output biases replicated. Embedding
  and head are replicated.

``split_axis[name]`` is the axis a parameter is cut along (None: replicated on every TP
rank). Gradients of replicated parameters come out identical on every TP rank because
they are computed from all-reduced (bitwise equal) values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from parsim.errors import Infeasible
from parsim.numerics import mlp as M
from parsim.numerics import transformer as T


@dataclass(frozen=True)
class Block:
    """One unit of the model a pipeline stage can hold.

    forward(shards, xs, comm) -> (ys, cache); backward(shards, cache, dys, comm) ->
    (dxs or None, grads list of dicts). Lists are indexed by TP rank."""

    name: str
    params: tuple[str, ...]
    forward: Callable
    backward: Callable


@dataclass(frozen=True)
class ModelSpec:
    """The blocks of a model, how each parameter is split over TP, and its loss."""

    blocks: tuple[Block, ...]
    split_axis: dict
    loss_and_grad: Callable       # (logits, labels, scale) -> (loss, dlogits)

    def shard(self, params: dict, tp: int) -> list[dict]:
        """Cut a full parameter dict into ``tp`` per-rank dicts."""
        out = [{} for _ in range(tp)]
        for name, a in params.items():
            ax = self.split_axis[name]
            if ax is not None and a.shape[ax] % tp:
                raise Infeasible(f"parameter {name} has {a.shape[ax]} along axis {ax}, "
                                 f"not divisible by tp = {tp}")
            parts = [a] * tp if ax is None else np.split(a, tp, axis=ax)
            for t in range(tp):
                out[t][name] = np.array(parts[t], copy=True)
        return out

    def unshard(self, shards: list[dict]) -> dict:
        """Reassemble full parameters; replicated ones must agree on every TP rank."""
        out = {}
        for name in shards[0]:
            ax = self.split_axis[name]
            if ax is None:
                if any(not np.array_equal(s[name], shards[0][name]) for s in shards):
                    raise AssertionError(f"replicated parameter {name} differs across TP ranks")
                out[name] = shards[0][name].copy()
            else:
                out[name] = np.concatenate([s[name] for s in shards], axis=ax)
        return out


def _xent(logits, labels, scale):
    loss, probs = M.xent_fwd(logits, labels)
    return loss, M.xent_bwd(probs, labels, logits.shape, scale)


# ---- MLP ---------------------------------------------------------------------------------

def _mlp_layer(i: int, L: int) -> Block:
    W, b = f"W{i}", f"b{i}"
    kind = "row" if i % 2 else ("col" if i + 1 < L else "rep")
    act = i < L - 1                                   # ReLU after every layer but the last

    def forward(shards, xs, comm):
        if kind == "row":
            part = [M.linear_fwd(x, s[W]) for s, x in zip(shards, xs)]        # (b, d_out) partial
            a = [z + s[b] for z, s in zip(comm.all_reduce(part, tag="tp"), shards)]
        else:                                          # col: (b, d_out/t); rep: (b, d_out)
            a = [M.linear_fwd(x, s[W], s[b]) for s, x in zip(shards, xs)]
        ys = [M.relu_fwd(z) for z in a] if act else a
        return ys, (xs, ys)

    def backward(shards, cache, dys, comm):
        xs, ys = cache
        dz = [M.relu_bwd(dy, y) for dy, y in zip(dys, ys)] if act else dys
        dxs, grads = [], []
        for s, x, d in zip(shards, xs, dz):
            dx, dW, db = M.linear_bwd(d, x, s[W])
            dxs.append(dx)
            grads.append({W: dW, b: db})
        if i == 0:
            return None, grads
        if kind == "col":                              # input was replicated: sum partials
            dxs = comm.all_reduce(dxs, tag="tp")
        return dxs, grads

    return Block(f"layer{i}", (W, b), forward, backward)


def mlp_blocks(sizes) -> ModelSpec:
    """One block per linear layer of an MLP with ``sizes``."""
    L = len(sizes) - 1
    axis = {}
    for i in range(L):
        col, row = i % 2 == 0 and i + 1 < L, i % 2 == 1
        axis[f"W{i}"] = 1 if col else (0 if row else None)
        axis[f"b{i}"] = 0 if col else None
    return ModelSpec(tuple(_mlp_layer(i, L) for i in range(L)), axis, _xent)


# ---- transformer -------------------------------------------------------------------------

def _embed_block(cfg) -> Block:
    def forward(shards, xs, comm):
        return [T.embed_fwd(x, s["wte"], s["wpe"]) for s, x in zip(shards, xs)], xs

    def backward(shards, toks, dys, comm):
        grads = []
        for s, tok, dy in zip(shards, toks, dys):
            dwte, dwpe = T.embed_bwd(dy, tok, s["wte"].shape, s["wpe"].shape)
            grads.append({"wte": dwte, "wpe": dwpe})
        return None, grads

    return Block("embed", ("wte", "wpe"), forward, backward)


def _tblock(l: int, cfg, tp: int) -> Block:
    pre = f"h{l}."
    heads = cfg.n_heads // tp

    def forward(shards, xs, comm):
        ps = [T.sub(s, pre) for s in shards]
        h1 = [T.layernorm_fwd(x, p["ln1_g"], p["ln1_b"]) for x, p in zip(xs, ps)]
        att = [T.attn_core_fwd(h, p, heads) for (h, _), p in zip(h1, ps)]
        z1 = comm.all_reduce([z for z, _ in att], tag="tp")                  # (b, T, d)
        x1 = [x + z + p["bo"] for x, z, p in zip(xs, z1, ps)]
        h2 = [T.layernorm_fwd(x, p["ln2_g"], p["ln2_b"]) for x, p in zip(x1, ps)]
        mlp = [T.mlp_core_fwd(h, p) for (h, _), p in zip(h2, ps)]
        z2 = comm.all_reduce([z for z, _ in mlp], tag="tp")
        ys = [x + z + p["b2"] for x, z, p in zip(x1, z2, ps)]
        return ys, (ps, h1, att, h2, mlp)

    def backward(shards, cache, dys, comm):
        ps, h1, att, h2, mlp = cache
        g = [{"b2": dy.reshape(-1, dy.shape[-1]).sum(0)} for dy in dys]
        dm = [T.mlp_core_bwd(dy, c, p) for dy, (_, c), p in zip(dys, mlp, ps)]
        dh2 = comm.all_reduce([dh for dh, _ in dm], tag="tp")
        dx1 = []
        for t, p in enumerate(ps):
            dx, g[t]["ln2_g"], g[t]["ln2_b"] = T.layernorm_bwd(dh2[t], h2[t][1], p["ln2_g"])
            dx1.append(dx + dys[t])
            g[t]["bo"] = dx1[t].reshape(-1, dx1[t].shape[-1]).sum(0)
            g[t].update(dm[t][1])
        da = [T.attn_core_bwd(d, c, p) for d, (_, c), p in zip(dx1, att, ps)]
        dh1 = comm.all_reduce([dh for dh, _ in da], tag="tp")
        dxs = []
        for t, p in enumerate(ps):
            dx, g[t]["ln1_g"], g[t]["ln1_b"] = T.layernorm_bwd(dh1[t], h1[t][1], p["ln1_g"])
            dxs.append(dx + dx1[t])
            g[t].update(da[t][1])
        return dxs, [{pre + k: v for k, v in gt.items()} for gt in g]

    return Block(f"block{l}", tuple(pre + n for n in T.BLOCK_PARAMS), forward, backward)


def _head_block(cfg) -> Block:
    def forward(shards, xs, comm):
        hs = [T.layernorm_fwd(x, s["lnf_g"], s["lnf_b"]) for s, x in zip(shards, xs)]
        return [M.linear_fwd(h, s["Wout"]) for (h, _), s in zip(hs, shards)], hs

    def backward(shards, hs, dys, comm):
        dxs, grads = [], []
        for s, (h, c), dy in zip(shards, hs, dys):
            dh, dW, _ = M.linear_bwd(dy, h, s["Wout"])
            dx, dg, db = T.layernorm_bwd(dh, c, s["lnf_g"])
            dxs.append(dx)
            grads.append({"Wout": dW, "lnf_g": dg, "lnf_b": db})
        return dxs, grads

    return Block("head", ("lnf_g", "lnf_b", "Wout"), forward, backward)


def lm_blocks(cfg, tp: int = 1) -> ModelSpec:
    """Embedding, ``n_layers`` transformer blocks and the head of the tiny LM.

    Inputs are tokens[:, :-1] and labels tokens[:, 1:] of a (b, T+1) batch."""
    if cfg.n_heads % tp:
        raise Infeasible(f"tp = {tp} must divide n_heads = {cfg.n_heads}")
    axis = {"wte": None, "wpe": None, "lnf_g": None, "lnf_b": None, "Wout": None}
    cols, rows = ("Wq", "bq", "Wk", "Wv", "bv", "W1", "b1"), ("Wo", "W2")
    for l in range(cfg.n_layers):
        for n in T.BLOCK_PARAMS:
            axis[f"h{l}.{n}"] = (1 if n.startswith("W") else 0) if n in cols else (
                0 if n in rows else None)
    blocks = (_embed_block(cfg), *(_tblock(l, cfg, tp) for l in range(cfg.n_layers)),
              _head_block(cfg))

    return ModelSpec(blocks, axis, _xent)
