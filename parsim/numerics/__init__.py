"""Real numpy training under the same parallel layouts parsim times.

Every layout parsim predicts can be run here on small models to prove it computes what a
single device computes: forward and backward written out (``mlp``, ``transformer``),
collectives that really move chunks between per-rank arrays (``comm``; its step
schedules are the contract with the DES), pipeline schedules (``pipeline``), Megatron
tensor-parallel blocks (``blocks``), DP / TP / PP / ZeRO / parameter-server training
(``layouts``) and the serial-vs-parallel comparison (``check.run_check``).

>>> from parsim.numerics import run_check
>>> r = run_check({"dp": 2, "algorithm": "halving_doubling", "steps": 3})
>>> r["exact"], r["max_rel_diff"] <= 1e-12
(True, True)
"""
from parsim.numerics.check import run_check
from parsim.numerics.comm import (Comm, Schedule, Step, apply_steps, broadcast_steps,
                                  chunk_bounds, deliver, halving_doubling_steps,
                                  ps_pull_steps, ps_push_steps, read_payload,
                                  ring_all_gather_steps, ring_reduce_scatter_steps,
                                  ring_steps, step_deps, step_elems, tree_steps)
from parsim.numerics.layouts import Layout, ParallelTrainer

__all__ = [
    "run_check", "Layout", "ParallelTrainer", "Comm", "Schedule", "Step", "apply_steps",
    "broadcast_steps", "chunk_bounds", "deliver", "halving_doubling_steps", "ps_pull_steps",
    "ps_push_steps", "read_payload", "ring_all_gather_steps", "ring_reduce_scatter_steps",
    "ring_steps", "step_deps", "step_elems", "tree_steps",
]
