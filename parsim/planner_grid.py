"""The planner's layout grid and its vectorised evaluator.

A *skeleton* fixes the cluster size and the rank grid, (gpus, tp, cp, pp, dp); the
layouts of one skeleton vary micro-batch size, schedule and virtual stages, ZeRO
stage, recompute mode and sequence parallelism. One skeleton is the unit of work
of a sweep (a chunk of hundreds to thousands of layouts).

The evaluator reproduces :func:`parsim.engines.analytical.run` and
:func:`parsim.cost.memory.memory_per_device` exactly, by factoring them:

* the per-layer costs depend only on (tp, cp, micro_batch, sequence_parallel,
  recompute): :func:`parsim.parallel.workload.chunk_costs` is called once per key
  with 1 layer (a middle chunk) and with 0 layers at the ends (embedding; logits);
* the per-stage gradient synchronisation, ZeRO gathers and optimizer step depend
  only on the skeleton: :func:`parsim.parallel.workload.step_costs` once with
  ZeRO 0 and once with ZeRO 3 (the ZeRO-1/2 gather is half the ZeRO-3 one);
* everything else is combined over the layouts × stages as numpy arrays, line by
  line as :func:`parsim.engines.analytical.compose` does (pipeline
  m·T_max + (ΣT_i − T_max)/v, fill/drain sends, the per-stage tails, the slowest
  stage) and as ``memory_per_device`` does (per-stage weights, gradients, optimizer
  state, in-flight activations; the stage that needs most).

``tests/test_planner.py`` samples layouts and checks agreement within 1e-9.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .cost import memory, placement
from .errors import ScenarioError
from .models import transformer as tfm
from .parallel import ranks as rk
from .parallel import workload
from .engines.analytical import BLOCKING_P2P
from .parallel.lower import grad_buckets
from .scenario import Scenario

SCHEDULES = ("gpipe", "1f1b", "interleaved")
RECOMPUTE = ("none", "selective", "full")
ZERO = (0, 1, 2, 3)


@dataclass(frozen=True)
class Space:
    """What the search may vary. ``None`` means: every value the model allows."""
    gpus: tuple[int, ...]
    tp: tuple[int, ...] | None = None
    pp: tuple[int, ...] | None = None
    cp: tuple[int, ...] = (1,)
    micro_batch: tuple[int, ...] | None = None
    max_micro_batch: int = 16
    schedules: tuple[str, ...] = SCHEDULES
    max_vpp: int | None = None
    zero: tuple[int, ...] = ZERO
    recompute: tuple[str, ...] = RECOMPUTE
    sequence_parallel: tuple[bool, ...] = (False, True)
    tp_across_nodes: bool = False


@dataclass(frozen=True)
class Skeleton:
    gpus: int
    tp: int
    cp: int
    pp: int
    dp: int

    @property
    def key(self) -> str:
        return f"n{self.gpus}.tp{self.tp}.cp{self.cp}.pp{self.pp}.dp{self.dp}"


def scenario_for_gpus(sc: Scenario, gpus: int) -> Scenario:
    """The scenario's cluster resized to ``gpus`` devices (same topology and GPU)."""
    table = dict(sc.cluster)
    if "gpus" in table:
        table["gpus"] = gpus
    elif "dims" in table:
        if int(np.prod(table["dims"])) != gpus:
            raise ScenarioError(f"--gpus {gpus}: a torus of dims {table['dims']} cannot be "
                                "resized; give the cluster's own size", file=sc.file, key="cluster.dims")
    else:
        gpn = table.get("gpus_per_node", 8)
        if gpus % gpn:
            raise ScenarioError(f"--gpus {gpus}: must be a multiple of cluster.gpus_per_node = {gpn}",
                                file=sc.file, key="cluster.gpus_per_node")
        table["nodes"] = gpus // gpn
    return replace(sc, cluster=table)


def gpus_per_node(sc: Scenario) -> int:
    return sc.cluster.get("gpus_per_node", 8) if "gpus" not in sc.cluster else sc.cluster["gpus"]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def skeletons(sc: Scenario, space: Space) -> list[Skeleton]:
    """Every (gpus, tp, cp, pp, dp) whose product is the cluster size and that divides
    the model (Megatron-LM's argument checks, as :func:`parsim.scenario.check_layout`)."""
    m, t, p = sc.model, sc.training, sc.parallel
    if m.kind != "transformer":
        raise ScenarioError(f"plan searches transformer layouts; model.kind = {m.kind!r}",
                            file=sc.file, key="model.kind")
    out = []
    for n in space.gpus:
        tps = space.tp or [d for d in _divisors(m.heads)
                           if space.tp_across_nodes or d <= gpus_per_node(sc)]
        for tp in tps:
            if m.heads % tp or (m.kv_heads % tp and tp % m.kv_heads) or m.ffn_hidden % tp:
                continue
            for cp in space.cp:
                if cp > 1 and m.seq_len % (2 * cp):
                    continue
                for pp in space.pp or _divisors(m.layers):
                    if m.layers % pp or n % (tp * cp * pp):
                        continue
                    dp = n // (tp * cp * pp)
                    if t.global_batch % dp or (p.ep > 1 and (dp % p.ep or m.num_experts % p.ep)):
                        continue
                    out.append(Skeleton(n, tp, cp, pp, dp))
    return out


def sub_grid(sc: Scenario, sk: Skeleton, space: Space) -> list[tuple[int, str, int]]:
    """Valid (micro_batch, schedule, vpp) of a skeleton."""
    per_replica = sc.training.global_batch // sk.dp
    mbs = space.micro_batch or [b for b in _divisors(per_replica) if b <= space.max_micro_batch]
    out = []
    for b in mbs:
        if per_replica % b:
            continue
        m = per_replica // b
        for sched in space.schedules:
            if sk.pp == 1:
                if sched == "1f1b":        # one stage: every schedule is the same, 1F1B holds least
                    out.append((b, sched, 1))
            elif sched != "interleaved":
                out.append((b, sched, 1))
            elif m % sk.pp == 0:
                for v in range(2, sc.model.layers // sk.pp + 1):
                    if sc.model.layers % (sk.pp * v) == 0 and (space.max_vpp is None or v <= space.max_vpp):
                        out.append((b, sched, v))
    return out


def layout_scenario(sc: Scenario, sk: Skeleton, micro_batch=1, schedule="1f1b", vpp=1, zero=0,
                    recompute="none", sequence_parallel=False) -> Scenario:
    """The scenario with one layout (cluster sized for ``sk.gpus``)."""
    par = replace(sc.parallel, tp=sk.tp, cp=sk.cp, pp=sk.pp, dp=sk.dp, vpp=vpp, schedule=schedule,
                  sequence_parallel=bool(sequence_parallel), zero=int(zero), stage_layers=())
    tr = replace(sc.training, micro_batch=int(micro_batch), recompute=recompute)
    return replace(scenario_for_gpus(sc, sk.gpus), parallel=par, training=tr)


@dataclass
class Context:
    """One cluster size's device and cluster, and caches of the per-key costs."""
    sc: Scenario
    device: object
    cluster: object
    layer: dict = field(default_factory=dict)
    stage: dict = field(default_factory=dict)
    p2p: dict = field(default_factory=dict)

    @classmethod
    def build(cls, sc: Scenario, gpus: int) -> "Context":
        from .predict import cluster_for, device_for
        sized = scenario_for_gpus(sc, gpus)
        return cls(sized, device_for(sized), cluster_for(sized))

    def layer_costs(self, sk: Skeleton, b: int, sp: bool, rc: str) -> np.ndarray:
        """[fwd, bwd, tp_fwd, tp_bwd] of one layer, [fwd, bwd] of the embedding end and
        of the logits end, and one layer's activation bytes (see module docstring)."""
        key = (sk.tp, sk.cp, b, sp, rc)
        row = self.layer.get(key)
        if row is None:
            s = layout_scenario(self.sc, sk, b, recompute=rc, sequence_parallel=sp)
            mid = workload.chunk_costs(s, self.device, self.cluster, 1, False, False)
            first = workload.chunk_costs(s, self.device, self.cluster, 0, True, False)
            last = workload.chunk_costs(s, self.device, self.cluster, 0, False, True)
            row = np.array([mid.fwd_s, mid.bwd_s, mid.tp_fwd_s, mid.tp_bwd_s, first.fwd_s,
                            first.bwd_s, last.fwd_s, last.bwd_s, memory.layer_activation_bytes(s)])
            self.layer[key] = row
        return row

    def stage_costs(self, sk: Skeleton) -> dict:
        """Per stage: parameters, gradient sync (ZeRO 0 and ≥1), gathers, optimizer."""
        got = self.stage.get(sk)
        if got is None:
            s0 = layout_scenario(self.sc, sk, zero=0)
            c0 = workload.step_costs(s0, self.device, self.cluster)
            got = {"params": np.array([memory.stage_params(s0, i) for i in range(sk.pp)]),
                   "sync0": np.array(c0.grad_sync_s), "opt0": np.array(c0.optimizer_s),
                   "buckets": grad_buckets(c0), "kind": c0.grad_sync_kind,
                   "algorithm": c0.grad_sync_algorithm}
            if self.sc.parallel.grad_sync != "ps":
                c3 = workload.step_costs(layout_scenario(self.sc, sk, zero=3), self.device,
                                         self.cluster)
                got.update(sync1=np.array(c3.grad_sync_s), zg3=np.array(c3.zero3_gather_s),
                           opt1=np.array(c3.optimizer_s), algorithm1=c3.grad_sync_algorithm)
            self.stage[sk] = got
        return got

    def p2p_s(self, sk: Skeleton, b: int) -> float:
        """One micro-batch's send between stages (as :func:`workload.step_costs`)."""
        key = (sk.tp, sk.cp, sk.dp, sk.pp > 1, b)
        t = self.p2p.get(key)
        if t is None:
            t = 0.0
            if sk.pp > 1:
                m = self.sc.model
                act = b * (m.seq_len // sk.cp) * m.hidden * workload.ACT_BYTES
                nbytes = act / sk.tp if sk.tp > 1 and self.sc.parallel.scatter_gather else act
                par = replace(self.sc.parallel, tp=sk.tp, cp=sk.cp, dp=sk.dp, pp=sk.pp)
                t = placement.p2p_time_s(self.cluster, rk.rank_of(par, pp=0),
                                         rk.rank_of(par, pp=1), nbytes)
            self.p2p[key] = t
        return t


def _rows(space: Space, sub, sk: Skeleton):
    """Index arrays of the layouts of a skeleton: sub-grid × zero × recompute × sp."""
    zeros = [z for z in space.zero]
    sps = [s for s in space.sequence_parallel if sk.tp > 1 or not s] or [False]
    shape = (len(sub), len(zeros), len(space.recompute), len(sps))
    idx = np.indices(shape).reshape(4, -1)
    return idx, zeros, sps


def evaluate(ctx: Context, sk: Skeleton, space: Space, *, per_stage: bool = False) -> dict:
    """Every layout of skeleton ``sk`` as columns of numpy arrays (see module docstring)."""
    sc = ctx.sc
    m_spec, t = sc.model, sc.training
    sub = sub_grid(sc, sk, space)
    if sc.parallel.grad_sync == "ps":
        space = replace(space, zero=(0,))
    idx, zeros, sps = _rows(space, sub, sk)
    if not sub:
        return {"n": 0}
    i_sub, i_z, i_r, i_sp = idx
    b_v = np.array([s[0] for s in sub])[i_sub]
    vpp = np.array([s[2] for s in sub])[i_sub]
    sched = np.array([SCHEDULES.index(s[1]) for s in sub])[i_sub]
    zero = np.array(zeros)[i_z]
    # per-layer costs: table over (sub-grid micro-batch, recompute, sp)
    table = np.array([[[ctx.layer_costs(sk, s[0], sp, rc) for sp in sps] for rc in space.recompute]
                      for s in sub])
    lc = table[i_sub, i_r, i_sp]                      # (G, 9)
    f_l, b_l, tpf_l, tpb_l, emb_f, emb_b, lg_f, lg_b, act_l = lc.T
    p2p = np.array([ctx.p2p_s(sk, s[0]) for s in sub])[i_sub]
    stage = ctx.stage_costs(sk)
    pp, n_layers = sk.pp, m_spec.layers // sk.pp
    m = t.global_batch // (sk.dp * b_v)
    first = (np.arange(pp) == 0)[None, :]
    last = (np.arange(pp) == pp - 1)[None, :]
    # stage_times: compute, TP comm, backward; per stage (G, pp)
    comp = (n_layers * (f_l + b_l))[:, None] + first * (emb_f + emb_b)[:, None] \
        + last * (lg_f + lg_b)[:, None]
    tp_c = n_layers * (tpf_l + tpb_l)
    # the backward of the stage's first chunk (chunk i of stage i) ends the stage's pass
    chunk_layers = m_spec.layers // (pp * vpp)
    last_chunk = last & (vpp == 1)[:, None]
    last_bwd = (chunk_layers * (b_l + tpb_l))[:, None] + first * emb_b[:, None] \
        + last_chunk * lg_b[:, None]
    T = comp + tp_c[:, None]
    rows = np.arange(len(b_v))
    k = np.argmax(T, axis=1)
    T_max = T[rows, k]
    pipe = m * T_max + (T.sum(axis=1) - T_max) / vpp
    pp_s = 2 * (pp * vpp - 1) * p2p if pp > 1 else np.zeros_like(pipe)
    if pp > 1:   # blocking steady-state sends (analytical.blocking_p2p_s)
        pp_s = pp_s + m * BLOCKING_P2P[sc.parallel.pipeline_p2p] * p2p
    # tails: what follows the last backward, per stage
    z = zero[:, None]
    if stage["kind"] == "ps":
        gs = np.broadcast_to(stage["sync0"], T.shape)
    else:
        # ZeRO-1/2 with all-reduced gradients sync as ZeRO-0 does (workload.step_costs)
        ar12 = ((z == 1) | (z == 2)) & (sc.parallel.zero_grad_reduce == "all_reduce")
        gs = np.where((z == 0) | ar12, stage["sync0"], stage["sync1"])
    nb = stage["buckets"]
    if t.overlap_grad_reduce:
        sync = np.maximum(gs / nb, gs - last_bwd * (nb - 1) / nb)
    else:
        sync = np.broadcast_to(gs, T.shape)
    sync = np.where(gs <= 0, 0.0, sync)
    if stage["kind"] == "ps" and sc.parallel.ps_mode == "async":
        sync = np.maximum(0.0, gs - m[:, None] * T)
    zg3 = stage.get("zg3", np.zeros(pp))
    gather = np.where((z == 1) | (z == 2), zg3 / 2, 0.0)
    if t.overlap_param_gather:
        gather = gather / nb
    zg = np.where(z == 3, zg3, 0.0)
    z3 = np.where(zg != 0, m[:, None] * np.maximum(0.0, zg - comp), 0.0)
    opt = np.where(z == 0, stage["opt0"], stage.get("opt1", stage["opt0"]))
    comm_tail = sync + gather + z3
    tail = comm_tail + opt
    j = np.argmax(tail, axis=1)
    step = pipe + pp_s + tail[rows, j]
    rc_code = i_r
    out = {
        "n": len(b_v), "gpus": sk.gpus, "tp": sk.tp, "cp": sk.cp, "pp": sk.pp, "dp": sk.dp,
        "micro_batch": b_v, "vpp": vpp, "schedule": sched, "zero": zero,
        "recompute": np.array([RECOMPUTE.index(r) for r in space.recompute])[rc_code],
        "sequence_parallel": np.array(sps)[i_sp], "microbatches": m,
        "step_time_s": step, "compute_s": m * comp[rows, k], "bubble_s": pipe - m * T_max,
        "tp_s": m * tp_c, "pp_s": pp_s, "dp_s": comm_tail[rows, j], "optimizer_s": opt[rows, j],
    }
    out["exposed_comm_s"] = out["dp_s"] + out["tp_s"] + out["pp_s"]
    out.update(_memory(ctx, sk, stage["params"], out, act_l, per_stage))
    model_f = tfm.model_flops(m_spec, t.global_batch)
    peak = ctx.device.peak_flops.get(t.precision) or max(ctx.device.peak_flops.values())
    out["mfu"] = model_f / step / sk.gpus / peak
    out["fits"] = out["memory_bytes"] <= ctx.device.mem_bytes
    return out


def _memory(ctx: Context, sk: Skeleton, params, L: dict, act_l, per_stage: bool) -> dict:
    """memory_per_device over layouts × stages: the stage that needs most, by kind."""
    sc = ctx.sc
    m_spec, t = sc.model, sc.training
    pp = sk.pp
    m = L["microbatches"][:, None].astype(float)
    stages = np.arange(pp)[None, :]
    sched, vpp = L["schedule"][:, None], L["vpp"][:, None]
    inflight = np.minimum(pp - stages, m)
    inflight = np.where(sched == SCHEDULES.index("interleaved"),
                        inflight * (1 + (pp - 1) / (pp * vpp)), inflight)
    inflight = np.where(sched == SCHEDULES.index("gpipe"), m, inflight)
    sbh = (m_spec.seq_len // sk.cp) * L["micro_batch"][:, None] * m_spec.hidden
    acts = (m_spec.layers // pp) * act_l[:, None] * inflight
    acts = acts + (stages == 0) * (sbh * inflight[:, :1] / sk.tp)
    acts = acts + (stages == pp - 1) * (4 * sbh / sk.tp * (1 + m_spec.vocab / m_spec.hidden))
    shard = sk.dp * sk.cp
    z = L["zero"][:, None]
    w_b = memory.weight_bytes_per_param(t.precision)
    g_b = memory.DTYPE_BYTES[t.grad_dtype]
    o_b = memory.optimizer_bytes_per_param(t.optimizer, t.precision)
    p = params[None, :]
    w = p * w_b / np.where(z >= 3, shard, 1)
    g = p * g_b / np.where(z >= 2, shard, 1)
    o = p * o_b / np.where(z >= 1, shard, 1)
    total = w + g + o + acts
    rows = np.arange(total.shape[0])
    s = np.argmax(total, axis=1)
    out = {"memory_bytes": total[rows, s], "mem_params": w[rows, s], "mem_grads": g[rows, s],
           "mem_optimizer": o[rows, s], "mem_activations": acts[rows, s], "mem_stage": s}
    if per_stage:
        out["stage_memory"] = {"params": w, "grads": g, "optimizer": o, "activations": acts}
    return out


def layout_dict(cols: dict, i: int, base: Scenario) -> dict:
    """Row ``i`` of evaluated columns as a plain record (scenario-style keys)."""
    g = lambda k: cols[k] if np.ndim(cols[k]) == 0 else cols[k][i]  # noqa: E731
    par = {"dp": int(g("dp")), "tp": int(g("tp")), "pp": int(g("pp")), "cp": int(g("cp")),
           "vpp": int(g("vpp")), "schedule": SCHEDULES[int(g("schedule"))],
           "sequence_parallel": bool(g("sequence_parallel")), "zero": int(g("zero"))}
    if base.parallel.ep > 1:
        par["ep"] = base.parallel.ep
    rec = {"gpus": int(g("gpus")), "parallel": par,
           "training": {"global_batch": base.training.global_batch,
                        "micro_batch": int(g("micro_batch")),
                        "recompute": RECOMPUTE[int(g("recompute"))]},
           "microbatches": int(g("microbatches"))}
    for k in ("step_time_s", "mfu", "memory_bytes", "compute_s", "bubble_s", "exposed_comm_s",
              "tp_s", "pp_s", "dp_s", "optimizer_s", "mem_params", "mem_grads", "mem_optimizer",
              "mem_activations"):
        rec[k] = float(g(k))
    rec["mem_stage"] = int(g("mem_stage"))
    return rec
