"""A prediction from the discrete-event engine: lower, simulate, break down.

The step time is the simulated makespan. Compute and tensor-parallel time per
micro-batch are the costs the program charged (the same as the closed form's);
what the simulation adds is how much of the gradient synchronisation and of the
pipeline sends is left exposed once flows share links and overlap the backward
pass. The pipeline bubble is what remains.
"""
from __future__ import annotations

from ..parallel.lower import device_view, lower
from ..parallel.workload import step_costs
from ..program import COMPUTE
from ..scenario import Scenario
from . import analytical, des

# Above this many ops, "auto" simulates one data-parallel replica (des_replicas).
REDUCE_ABOVE_OPS = 20_000


def predict(sc: Scenario, device, cluster, *, fidelity: str = "auto", keep=False):
    """Simulate one step of ``sc``; returns a Prediction (and, with ``keep``, the
    DES result and program for traces)."""
    costs = step_costs(sc, device, cluster)
    limit = {"full": float("inf"), "reduced": 0}.get(fidelity, REDUCE_ABOVE_OPS)
    program, replicas = lower(sc, costs, reduce_above_ops=limit)
    result = des.run(program, device_view(sc, cluster), fidelity=fidelity, replicas=replicas)
    pred = _compose(sc, device, cluster, costs, program, result)
    return (pred, result, program) if keep else pred


def _compose(sc, device, cluster, costs, program, result):
    p, m = sc.parallel, sc.microbatches
    st = analytical.stage_times(sc, costs)
    stage_T = [c + tp for c, tp, _, _ in st]
    k = max(range(p.pp), key=lambda i: stage_T[i])
    ends = result.end_s
    # the pipeline ends with the last forward/backward compute; the rest is the tail
    pipe_end = max(float(ends[op.id]) for op in program.ops
                   if op.kind == COMPUTE and op.category == "compute")
    opt_s = max(costs.optimizer_s)
    tail = max(0.0, result.step_time_s - pipe_end)
    sync_s = max(0.0, tail - opt_s)
    pp_s = analytical.pipeline_sends_s(sc, costs)
    compute_s, tp_s = m * st[k][0], m * st[k][1]
    bubble_s = max(0.0, pipe_end - compute_s - tp_s - pp_s)
    pp_s = pipe_end - compute_s - tp_s - bubble_s
    comm = {"dp": 0.0, "tp": tp_s, "pp": pp_s, "ps": 0.0}
    comm[costs.grad_sync_kind] = sync_s
    notes = list(result.notes) + [f"DES: {result.events} events in {result.wall_s:.2f} s, "
                                  f"{len(program.ops)} ops"]
    return analytical.prediction(sc, device, "des", result.step_time_s, compute_s, bubble_s,
                                 comm, result.step_time_s - pipe_end - sync_s,
                                 costs.grad_sync_algorithm, notes)
