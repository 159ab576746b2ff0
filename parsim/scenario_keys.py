"""Every key a scenario file may hold: its table, parser, default and what is accepted.

One declaration per key (``MODEL_KEYS``, ``TRAINING_KEYS``, ``PARALLEL_KEYS``; cluster keys
beyond ``topology``, ``gpu``, ``nodes``, ``gpus_per_node``, ``gpus``, ``profile``
and ``price_per_gpu_hour`` belong to the topology, :mod:`parsim.topologies_builtin`). A parser
takes the raw TOML value and the key path and returns the value or raises
:class:`~parsim.errors.ScenarioError` saying what would be accepted. :mod:`parsim.scenario`
reads a file against these tables.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from . import units
from .errors import ScenarioError, did_you_mean, one_of


# --------------------------------------------------------------------------- parsers
def _int(lo=1, hi=None):
    def parse(v, where):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ScenarioError(f"{v!r} must be an integer", **where)
        if v < lo or (hi is not None and v > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise ScenarioError(f"{v} is out of range; accepted: an integer {rng}", **where)
        return v
    return parse


def _float(lo=0.0):
    def parse(v, where):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo:
            raise ScenarioError(f"{v!r} must be a number >= {lo}", **where)
        return float(v)
    return parse


def _bool(v, where):
    if not isinstance(v, bool):
        raise ScenarioError(f"{v!r} must be true or false", **where)
    return v


def _choice(*choices):
    def parse(v, where):
        if v not in choices:
            raise ScenarioError(f"{v!r} is not accepted; {one_of(choices)}{did_you_mean(v, choices)}",
                                **where)
        return v
    return parse


def _str(v, where):
    if not isinstance(v, str) or not v:
        raise ScenarioError(f"{v!r} must be a non-empty string", **where)
    return v


def _int_list(v, where):
    if (not isinstance(v, list) or not v
            or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in v)):
        raise ScenarioError(f"{v!r} must be a list of positive integers, e.g. [1000, 500, 100]",
                            **where)
    return tuple(v)


def _quantity(kind):
    parser = units.PARSERS[kind]

    def parse(v, where):
        try:
            return parser(v)
        except units.UnitError as err:
            raise ScenarioError(err.detail, **where) from None
    return parse


# --------------------------------------------------------------------------- schema
OPTIONAL = object()  # default meaning "absent unless given"

MODEL_KEYS: dict[str, tuple[Callable, Any]] = {
    "preset": (_str, OPTIONAL),
    "hf_config": (_str, OPTIONAL),
    "name": (_str, OPTIONAL),
    "kind": (_choice("transformer", "mlp", "collective"), OPTIONAL),
    "layers": (_int(), OPTIONAL),
    "hidden": (_int(), OPTIONAL),
    "heads": (_int(), OPTIONAL),
    "kv_heads": (_int(), OPTIONAL),
    "ffn_hidden": (_int(), OPTIONAL),
    "gated_mlp": (_bool, False),
    "bias": (_bool, True),
    "norm": (_choice("layernorm", "rmsnorm"), "layernorm"),
    "tied_embeddings": (_bool, True),
    "position": (_choice("learned", "rope"), "learned"),
    "seq_len": (_int(), OPTIONAL),
    "vocab": (_int(), OPTIONAL),
    "num_experts": (_int(), 1),
    "experts_per_token": (_int(), 1),
    "sizes": (_int_list, OPTIONAL),
    "op": (_choice("all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all"),
           "all_reduce"),
    "size": (_quantity("bytes"), OPTIONAL),
}
TRAINING_KEYS = {
    "global_batch": (_int(), OPTIONAL),
    "micro_batch": (_int(), 1),
    "precision": (_choice("fp32", "fp16", "bf16", "fp8"), "bf16"),
    "grad_dtype": (_choice("fp32", "fp16", "bf16"), OPTIONAL),
    "optimizer": (_choice("adam", "sgd"), "adam"),
    "recompute": (_choice("none", "selective", "full"), "none"),
    "flash_attention": (_bool, True),
    "attention_kernel": (_choice("auto", "fa2", "fa3"), "auto"),
    "unpadded_attention": (_bool, False),
    "overlap_grad_reduce": (_bool, True),
    "overlap_param_gather": (_bool, True),
    "bucket_size": (_quantity("bytes"), 40e6),
    "sync_rule": (_choice("average", "sum_params"), "average"),
    "lr": (_float(0.0), 0.1),
    "steps": (_int(), 10),
    "seed": (_int(0), 0),
}
PARALLEL_KEYS = {
    "dp": (_int(), OPTIONAL),
    "tp": (_int(), 1),
    "pp": (_int(), 1),
    "cp": (_int(), 1),
    "ep": (_int(), 1),
    "vpp": (_int(), 1),
    "stage_layers": (_int_list, OPTIONAL),
    "schedule": (_choice("gpipe", "1f1b", "interleaved"), OPTIONAL),
    "sequence_parallel": (_bool, False),
    "pipeline_p2p": (_choice("overlapped", "paired", "sequential"), "overlapped"),
    "scatter_gather": (_bool, True),
    "zero": (_int(0, 3), 0),
    "zero_grad_reduce": (_choice("reduce_scatter", "all_reduce"), "reduce_scatter"),
    "grad_sync": (_choice("allreduce", "ps"), "allreduce"),
    "algorithm": (_choice("auto", "ring", "tree", "halving_doubling", "hierarchical"), "auto"),
    "ps_servers": (_int(), 1),
    "ps_mode": (_choice("sync", "async"), "sync"),
    "staleness": (_int(0), 1),
}
TOP_KEYS = {"name", "description", "model", "training", "parallel", "cluster"}
TABLES = {"model": MODEL_KEYS, "training": TRAINING_KEYS, "parallel": PARALLEL_KEYS}

# the integer parser, for the cluster's common keys that parsim.scenario checks itself
integer = _int
