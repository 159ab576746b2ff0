"""The analytical engine: one training step in closed form.

Composes the per-op costs of :mod:`parsim.parallel.workload` (the same figures the
discrete-event engine charges) with the schedule formulas of Narayanan et al. 2021
(Megatron-LM PTD-P, sec. 2.2):

* GPipe and 1F1B, p stages, m micro-batches, per-micro-batch stage time T:
  pipeline = m·T_max + (Σ_i T_i - T_max), i.e. m·T + (p-1)·T when stages are equal,
  a bubble fraction (p-1)/m.
* Interleaved 1F1B with v chunks per device: m·T_max + (Σ_i T_i - T_max)/v, bubble
  (p-1)/(v·m).
* Pipeline sends: the fill and drain path crosses 2·(p·v - 1) boundaries. Where the
  framework blocks on its sends (``parallel.pipeline_p2p`` "paired" or "sequential"), the
  steady state adds k sends per micro-batch to every stage (:func:`blocking_p2p_s`).
* Gradient synchronisation overlaps the last micro-batch's backward pass when
  ``training.overlap_grad_reduce`` (Megatron's --overlap-grad-reduce; PyTorch DDP
  buckets): exposed = max(t_sync / buckets, t_sync - t_backward).
* The optimizer step is memory-bound (see workload).

Contention between groups is not seen here; that is the discrete-event engine's job.
"""
from __future__ import annotations

from ..cost import memory
from ..models import transformer as tfm
from ..parallel.lower import grad_buckets
from ..parallel.workload import StepCosts, step_costs
from ..result import Prediction
from ..scenario import Scenario


def stage_times(sc: Scenario, costs: StepCosts):
    """Per stage, per micro-batch: (compute, tp-comm, fwd, bwd) summed over its chunks."""
    p = sc.parallel
    out = []
    for i in range(p.pp):
        cs = [costs.chunks[i + k * p.pp] for k in range(p.vpp)]
        out.append((sum(c.fwd_s + c.bwd_s for c in cs), sum(c.tp_fwd_s + c.tp_bwd_s for c in cs),
                    sum(c.fwd_s + c.tp_fwd_s for c in cs), sum(c.bwd_s + c.tp_bwd_s for c in cs)))
    return out


def pipeline_time_s(sc: Scenario, stage_T: list[float]) -> float:
    """m·T_max + (Σ T_i - T_max)/v: the slowest stage paces all m micro-batches and the
    others add the fill and drain, shortened v times by interleaving. Equal stages give
    m·T + (p-1)·T/v, the bubble (p-1)/(v·m) of Narayanan et al. 2021, sec. 2.2."""
    m, v = sc.microbatches, sc.parallel.vpp
    t_max = max(stage_T)
    return m * t_max + (sum(stage_T) - t_max) / v


def pipeline_sends_s(sc: Scenario, costs: StepCosts) -> float:
    """Sends on the fill-and-drain path: 2·(p·v - 1) boundaries, forward and back."""
    p = sc.parallel
    return 2 * (p.pp * p.vpp - 1) * costs.p2p_s if p.pp > 1 else 0.0


# Blocking pipeline transfers per micro-batch on each stage in the 1F1B steady state:
# Megatron-LM before Megatron-Core pairs them (send_forward_recv_backward after the
# forward, send_backward_recv_forward after the backward: two exchanges, each one
# transfer time on full-duplex links; megatron/schedules.py, 2021); DeepSpeed's
# PipelineEngine runs SendActivation, RecvActivation, SendGrad and RecvGrad as separate
# blocking instructions (deepspeed/runtime/pipe/schedule.py TrainSchedule): four.
BLOCKING_P2P = {"overlapped": 0, "paired": 2, "sequential": 4}


def blocking_p2p_s(sc: Scenario, costs: StepCosts) -> float:
    """Per micro-batch: pipeline transfers a stage waits for in the steady state."""
    p = sc.parallel
    return BLOCKING_P2P[p.pipeline_p2p] * costs.p2p_s if p.pp > 1 else 0.0


def gradient_sync_exposed_s(sc: Scenario, t_sync: float, t_backward: float, buckets: int) -> float:
    """Exposed gradient sync with b buckets, each reduced as soon as its 1/b of the
    last backward pass is done, one after another: the last bucket ends
    max(t_sync/b, t_sync - t_backward·(b-1)/b) after the backward pass."""
    if t_sync <= 0:
        return 0.0
    if not sc.training.overlap_grad_reduce:
        return t_sync
    return max(t_sync / buckets, t_sync - t_backward * (buckets - 1) / buckets)


def run(sc: Scenario, device, cluster) -> Prediction:
    costs = step_costs(sc, device, cluster)
    return compose(sc, device, cluster, costs)


def compose(sc: Scenario, device, cluster, costs: StepCosts, engine: str = "analytical",
            notes=()) -> Prediction:
    p, t = sc.parallel, sc.training
    m = sc.microbatches
    st = stage_times(sc, costs)
    stage_T = [c + tp for c, tp, _, _ in st]
    k = max(range(p.pp), key=lambda i: stage_T[i])
    pipe = pipeline_time_s(sc, stage_T)
    pp_s = pipeline_sends_s(sc, costs) + m * blocking_p2p_s(sc, costs)
    # what follows the last backward, per stage; the slowest stage sets the step
    tails = []
    nb = grad_buckets(costs)
    for i in range(p.pp):
        last_bwd = costs.chunks[i].bwd_s + costs.chunks[i].tp_bwd_s  # chunk 0 ends the stage
        sync = gradient_sync_exposed_s(sc, costs.grad_sync_s[i], last_bwd, nb)
        if costs.grad_sync_kind == "ps" and p.ps_mode == "async":
            sync = max(0.0, costs.grad_sync_s[i] - m * stage_T[i])   # hidden behind the next step
        gather = costs.param_gather_s[i]
        if t.overlap_param_gather:
            gather = gather / nb
        z3 = m * max(0.0, costs.zero3_gather_s[i] - st[i][0]) if costs.zero3_gather_s[i] else 0.0
        tails.append((sync + gather + z3 + costs.optimizer_s[i], sync + gather + z3,
                      costs.optimizer_s[i]))
    j = max(range(p.pp), key=lambda i: tails[i][0])
    compute_s = m * st[k][0]
    tp_s = m * st[k][1]
    bubble_s = pipe - m * stage_T[k]
    sync_s, opt_s = tails[j][1], tails[j][2]
    step = pipe + pp_s + tails[j][0]
    comm = {"dp": 0.0, "tp": tp_s, "pp": pp_s, "ps": 0.0}
    comm[costs.grad_sync_kind] = sync_s
    return prediction(sc, device, engine, step, compute_s, bubble_s, comm, opt_s,
                      costs.grad_sync_algorithm, notes)


def _flops(sc: Scenario):
    m, t = sc.model, sc.training
    if m.kind == "transformer":
        return tfm.model_flops(m, t.global_batch), tfm.hardware_flops(m, t.global_batch, t.recompute)
    f = 6.0 * t.global_batch * memory.mlp_params(m.sizes)   # fwd 2·P, bwd 4·P per sample
    return f, f


def prediction(sc, device, engine, step, compute_s, bubble_s, comm, opt_s, algorithm,
               notes=()) -> Prediction:
    """Assemble a Prediction from a step time and its breakdown (both engines)."""
    t, p = sc.training, sc.parallel
    n = p.world
    model_f, hw_f = _flops(sc)
    peak = device.peak_flops.get(t.precision) or max(device.peak_flops.values())
    mem = memory.memory_per_device(sc, device.mem_bytes)
    tokens = t.global_batch * (sc.model.seq_len if sc.model.kind == "transformer" else 1)
    exposed = sum(comm.values())
    return Prediction(
        name=sc.name, engine=engine, device=device.name, num_gpus=n, step_time_s=step,
        samples_per_s=t.global_batch / step, tokens_per_s=tokens / step,
        model_flops=model_f, hardware_flops=hw_f,
        model_tflops_per_gpu=model_f / step / n / 1e12,
        hardware_tflops_per_gpu=hw_f / step / n / 1e12,
        mfu=model_f / step / n / peak, hfu=hw_f / step / n / peak, peak_flops=peak,
        breakdown_s={"compute": compute_s, "bubble": bubble_s, "exposed_comm": exposed,
                     "optimizer": opt_s},
        comm_s=comm, memory_bytes=mem, fits_in_memory=mem["total"] <= mem["capacity"],
        layout={"dp": p.dp, "tp": p.tp, "pp": p.pp, "cp": p.cp, "ep": p.ep, "vpp": p.vpp,
                "schedule": p.schedule, "zero": p.zero, "micro_batch": t.micro_batch,
                "microbatches": sc.microbatches, "recompute": t.recompute,
                "sequence_parallel": p.sequence_parallel, "grad_sync": p.grad_sync},
        algorithm=algorithm, notes=tuple(notes))
