"""Prove a layout: train serially and in parallel on the same seeded data, compare.

``run_check(config)`` trains ``steps`` steps of one model twice from the same seeded
initial weights on the same batches: on one device (``mlp.loss_and_grads`` or
``transformer.loss_and_grads``, plain code that shares nothing with the layouts but the
ops) and under the layout (``layouts.ParallelTrainer``). After every step it compares
every parameter tensor, with relative difference max|θ_par − θ_ser| / max|θ_ser|.

The seed article's update θ(t+1) = θ(t) + Σ_i θ_i(t+1) (``sync_rule="sum_params"``) is
(N+1)·θ(t) − α Σ_i g_i: it multiplies the weights by N+1 each step instead of training.
The correct synchronous update is θ(t+1) = θ(t) − α·(1/N)·Σ_i g_i.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from parsim.errors import ScenarioError, did_you_mean, one_of
from parsim.numerics import data, mlp, transformer
from parsim.numerics.blocks import lm_blocks, mlp_blocks
from parsim.numerics.layouts import Layout, ParallelTrainer
from parsim.numerics.optim import make_optimizer

DEFAULTS = {
    "model": "mlp", "sizes": (64, 32, 10),
    "vocab": 16, "d_model": 16, "n_heads": 4, "n_layers": 2, "seq_len": 8,
    "dp": 1, "tp": 1, "pp": 1, "vpp": 1, "schedule": "1f1b", "zero": 0,
    "grad_sync": "allreduce", "algorithm": "ring", "ps_mode": "sync", "staleness": 0,
    "ps_servers": 1, "sync_rule": "average", "micro_batch": 0, "global_batch": 32,
    "lr": 0.1, "optimizer": "sgd", "steps": 10, "seed": 0, "dtype": "float64",
}
CHOICES = {
    "model": ("mlp", "lm"), "schedule": ("gpipe", "1f1b", "interleaved"), "zero": (0, 1, 2, 3),
    "grad_sync": ("allreduce", "ps"), "algorithm": ("ring", "tree", "halving_doubling"),
    "ps_mode": ("sync", "async"), "sync_rule": ("average", "sum_params", "sum_grads"),
    "optimizer": ("sgd", "adam"), "dtype": ("float64", "float32"),
}
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}   # summation order differs: a few ulps/step


def resolve(config) -> dict:
    """Defaults plus ``config`` (dict or dataclass); unknown keys and values are errors."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    c = dict(DEFAULTS)
    for k, v in dict(config or {}).items():
        if k not in DEFAULTS:
            raise ScenarioError(f"unknown key{did_you_mean(k, DEFAULTS)}", key=f"numerics.{k}")
        if k in CHOICES and v not in CHOICES[k]:
            raise ScenarioError(f"{v!r}: expected {one_of(CHOICES[k])}", key=f"numerics.{k}")
        c[k] = v
    for k in ("dp", "tp", "pp", "vpp", "steps", "global_batch", "ps_servers"):
        if not (isinstance(c[k], int) and c[k] >= 1):
            raise ScenarioError(f"{c[k]!r}: expected a positive integer", key=f"numerics.{k}")
    if c["vpp"] > 1 and c["schedule"] != "interleaved":
        raise ScenarioError(f"vpp = {c['vpp']} needs schedule = 'interleaved' (got "
                            f"{c['schedule']!r})", key="numerics.vpp")
    if c["zero"] and c["grad_sync"] == "ps":
        raise ScenarioError("ZeRO shards over an all-reduce group; with grad_sync = 'ps' the "
                            "servers already hold the optimizer state: set zero = 0",
                            key="numerics.zero")
    if c["sync_rule"] != "average" and (c["zero"] or c["grad_sync"] == "ps"):
        raise ScenarioError(f"sync_rule = {c['sync_rule']!r} applies to plain all-reduce data "
                            f"parallelism; set zero = 0 and grad_sync = 'allreduce'",
                            key="numerics.sync_rule")
    return c


def _layout(c) -> Layout:
    return Layout(**{f.name: c[f.name] for f in dataclasses.fields(Layout)})


def _setup(c):
    """Initial parameters, batches, model spec and serial loss function for a config."""
    dtype = np.dtype(c["dtype"])
    rng = np.random.default_rng(c["seed"])
    B, steps = c["global_batch"], c["steps"]
    if c["model"] == "mlp":
        sizes = list(c["sizes"])
        params = mlp.init_mlp(sizes, rng, dtype)
        batches = data.teacher_batches(c["seed"] + 1, steps, B, sizes[0], sizes[-1], dtype=dtype)
        return params, batches, mlp_blocks(sizes), lambda p, b: mlp.loss_and_grads(p, *b), (
            lambda b: b)
    cfg = transformer.LMConfig(c["vocab"], c["d_model"], c["n_heads"], c["n_layers"], c["seq_len"])
    params = transformer.init_lm(cfg, rng, dtype)
    batches = data.markov_batches(c["seed"] + 1, steps, B, cfg.seq_len, cfg.vocab)
    return params, batches, lm_blocks(cfg, c["tp"]), (
        lambda p, tok: transformer.loss_and_grads(p, tok, cfg)), (
        lambda tok: (tok[:, :-1], tok[:, 1:]))


def _rel(a, b) -> float:
    """max|a − b| / max|b| (inf if anything is not finite)."""
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), np.finfo(np.float64).tiny))


def run_check(config, *, executor=None) -> dict:
    """Train serially and under the layout; return the comparison (see module docstring).

    Keys: exact, max_rel_diff, tolerance, loss_serial, loss_parallel, per_tensor,
    verdict, plus layout, ticks, peak_inflight, bytes_by_tag, replicas_identical,
    memory_elems. ``executor`` replaces the collectives' step executor (fault injection,
    or a timed executor)."""
    c = resolve(config)
    layout = _layout(c)
    params0, batches, spec, serial_fn, to_xy = _setup(c)
    opt = make_optimizer(c["optimizer"], c["lr"])
    theta = {k: v.copy() for k, v in params0.items()}
    state = {k: opt.init(v) for k, v in theta.items()}
    trainer = ParallelTrainer(spec, params0, layout, opt, executor=executor)
    loss_s, loss_p, per_tensor, first_bad = [], [], {k: 0.0 for k in theta}, None
    tol = TOLERANCE[c["dtype"]]
    with np.errstate(all="ignore"):                # sum_params overflows on purpose
        for t, batch in enumerate(batches):
            loss, grads = serial_fn(theta, batch)
            for k in theta:
                opt.update(theta[k], grads[k], state[k], t + 1)
            loss_s.append(float(loss))
            loss_p.append(trainer.step(t, *to_xy(batch)))
            par = trainer.full_params()
            for k in theta:
                per_tensor[k] = max(per_tensor[k], _rel(par[k], theta[k]))
            if first_bad is None and max(per_tensor.values()) > tol:
                first_bad = t
    worst = max(per_tensor, key=per_tensor.get)
    out = {
        "exact": per_tensor[worst] <= tol, "max_rel_diff": per_tensor[worst], "tolerance": tol,
        "loss_serial": loss_s, "loss_parallel": loss_p, "per_tensor": per_tensor,
        "layout": dataclasses.asdict(layout), "ticks": trainer.ticks,
        "peak_inflight": trainer.peak_inflight, "bytes_by_tag": trainer.comm.bytes_by_tag(),
        "replicas_identical": trainer.replicas_identical(),
        "memory_elems": trainer.memory_elems(),
    }
    out["verdict"] = _verdict(c, out, worst, first_bad)
    return out


def describe(c) -> str:
    """Short name of a layout: 'dp2×tp2×pp2 (1f1b, ring)'."""
    parts = [f"{k}{c[k]}" for k in ("dp", "tp", "pp") if c[k] > 1] or ["single device"]
    extra = [c["schedule"] + (f", vpp{c['vpp']}" if c["vpp"] > 1 else "")] if c["pp"] > 1 else []
    if c["dp"] > 1:
        extra.append(f"{c['ps_mode']} PS" if c["grad_sync"] == "ps" else c["algorithm"])
    if c["zero"]:
        extra.append(f"ZeRO-{c['zero']}")
    return "×".join(parts) + (f" ({', '.join(extra)})" if extra else "")


def _verdict(c, r, worst, first_bad) -> str:
    name, N = describe(c), c["dp"]
    ls, lp, x, tol = r["loss_serial"], r["loss_parallel"], r["max_rel_diff"], r["tolerance"]
    if c["sync_rule"] == "sum_params":
        return (f"Wrong update: θ(t+1) = θ(t) + Σ_i θ_i(t+1) adds N = {N} whole copies of the "
                f"weights, θ ← (N+1)·θ − α·Σ_i g_i, so the weights grow about {N + 1}× per step "
                f"and the loss went {lp[0]:.4g} → {lp[-1]:.4g} while averaged gradients reached "
                f"{ls[-1]:.4g}; the synchronous update is θ(t+1) = θ(t) − α·(1/N)·Σ_i g_i.")
    if c["sync_rule"] == "sum_grads":
        return (f"θ(t+1) = θ(t) − α·Σ_i g_i takes steps N = {N} times too large (max relative "
                f"difference {x:.2e}, loss {lp[-1]:.4g} vs {ls[-1]:.4g} serial); divide by N.")
    if r["exact"]:
        return (f"{name} computes what one device computes: max relative difference {x:.2e} "
                f"≤ {tol:.0e} over {len(r['per_tensor'])} tensors and {len(ls)} steps.")
    if c["grad_sync"] == "ps" and c["ps_mode"] == "async" and c["staleness"] > 0:
        gap = np.array(lp) - np.array(ls)
        return (f"{name} with staleness {c['staleness']} is a different algorithm from serial "
                f"training (max relative difference {x:.2e}): final loss {lp[-1]:.4f} vs "
                f"{ls[-1]:.4f} serial, gap {gap[-1]:+.4f}, mean gap {gap.mean():+.4f}.")
    return (f"{name} does NOT compute what one device computes: max relative difference "
            f"{x:.2e} > {tol:.0e}, worst in {worst}, first exceeded after step {first_bad}.")
