"""Train one model under a parallel layout, with every rank's arrays really computed.

Ranks form a grid (dp, pp, tp), TP fastest: ``rank = d·pp·tp + stage·tp + t``. A
*position* is (virtual stage s, TP rank t): the parameters one rank holds for one model
chunk, kept as one flat vector (padded to a multiple of dp) with named views into it, so
gradient buckets, ZeRO shards and parameter-server shards are slices of that vector.

One step (:meth:`ParallelTrainer.step`):

1. Parameters to compute with: the replica's own (plain DP), all-gathered shards (ZeRO-3),
   or a version up to ``staleness`` updates old (asynchronous parameter server).
2. Forward and backward of every DP replica through the pipeline schedule
   (``pipeline.run_schedule``), each stage a TP group running ``blocks``; micro-batch
   losses are scaled by 1/m so accumulated gradients are the replica's mean gradient g_i.
3. Synchronise and update, for each position:

   * average (correct):  θ ← θ − α · (1/N) Σ_i g_i, the sum by the chosen all-reduce
   * ZeRO-1: all-reduce, each rank updates its 1/N of θ with its 1/N of the optimizer
     state, all-gather θ; ZeRO-2: reduce-scatter instead of all-reduce; ZeRO-3: also
     keeps only its θ shard (Rajbhandari et al., SC 2020)
   * parameter server: push g_i, server j sums its shard, averages, applies the
     optimizer, workers pull (Li et al., OSDI 2014); async: worker i computes on the
     version i·s/(N-1) updates old
   * ``sum_params``: the seed article's θ(t+1) = θ(t) + Σ_i θ_i(t+1), θ_i(t+1) being
     worker i's locally updated copy; ``sum_grads``: θ − α Σ_i g_i (no 1/N).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parsim.errors import Infeasible
from parsim.numerics.blocks import ModelSpec
from parsim.numerics.comm import Comm, apply_steps, chunk_bounds
from parsim.numerics.pipeline import pipeline_order, run_schedule


@dataclass(frozen=True)
class Layout:
    """How the job is split. ``micro_batch`` 0 means one micro-batch per replica."""

    dp: int = 1
    tp: int = 1
    pp: int = 1
    vpp: int = 1
    schedule: str = "1f1b"           # gpipe | 1f1b | interleaved
    micro_batch: int = 0
    zero: int = 0                    # 0 | 1 | 2 | 3
    grad_sync: str = "allreduce"     # allreduce | ps
    algorithm: str = "ring"          # ring | tree | halving_doubling
    ps_mode: str = "sync"            # sync | async
    staleness: int = 0
    ps_servers: int = 1
    sync_rule: str = "average"       # average | sum_params | sum_grads

    @property
    def world(self) -> int:
        return self.dp * self.tp * self.pp


class Flat:
    """Named tensors laid out in one vector of ``size`` elements padded to ``padded``."""

    def __init__(self, shapes: dict, pad_to: int):
        self.shapes = dict(sorted(shapes.items()))
        self.offsets, off = {}, 0
        for name, shape in self.shapes.items():
            self.offsets[name] = off
            off += int(np.prod(shape))
        self.size = off
        self.padded = -(-off // pad_to) * pad_to

    def views(self, vec) -> dict:
        return {n: vec[o:o + int(np.prod(s))].reshape(s)
                for (n, s), o in zip(self.shapes.items(), self.offsets.values())}

    def pack(self, arrays: dict, dtype) -> np.ndarray:
        vec = np.zeros(self.padded, dtype)
        for n, v in self.views(vec).items():
            v[...] = arrays[n]
        return vec


def partition(n: int, parts: int) -> list[range]:
    """Split range(n) into ``parts`` contiguous pieces, sizes differing by at most one."""
    if n < parts:
        raise Infeasible(f"pp·vpp = {parts} virtual stages need at least {parts} blocks; "
                         f"the model has {n}")
    b = chunk_bounds(n, parts)
    return [range(int(b[i]), int(b[i + 1])) for i in range(parts)]


class ParallelTrainer:
    """State of every rank of a layout; :meth:`step` trains one step on a global batch.

    ``executor`` replaces the reference schedule executor (:func:`comm.apply_steps`) for
    every collective, e.g. a DES that times the steps, or a fault injected in a test."""

    def __init__(self, spec: ModelSpec, params: dict, layout: Layout, opt, executor=None):
        self.spec, self.L, self.opt = spec, layout, opt
        L = layout
        self.n_stages = L.pp * L.vpp
        self.stages = [[spec.blocks[i] for i in r] for r in partition(len(spec.blocks), self.n_stages)]
        self.pos = [(s, t) for s in range(self.n_stages) for t in range(L.tp)]
        self.comm = Comm(L.algorithm, executor=executor or apply_steps)
        self.dtype = next(iter(params.values())).dtype
        shards = spec.shard(params, L.tp)
        self.flat: dict = {}
        vecs = {}
        for s, t in self.pos:
            names = [n for b in self.stages[s] for n in b.params]
            self.flat[s, t] = Flat({n: shards[t][n].shape for n in names}, L.dp)
            vecs[s, t] = self.flat[s, t].pack(shards[t], self.dtype)
        N = L.dp
        self.theta = [{p: self._own(vecs[p], d) for p in self.pos} for d in range(N)]
        self.state = [{p: opt.init(self._shard(vecs[p], d) if L.zero else vecs[p])
                       for p in self.pos} for d in range(N)]
        if L.grad_sync == "ps":                     # server j owns chunk j of each vector
            self.server = {p: vecs[p].copy() for p in self.pos}
            self.server_state = {p: [opt.init(c) for c in np.array_split(vecs[p], L.ps_servers)]
                                 for p in self.pos}
            self.history = {p: [vecs[p].copy()] for p in self.pos}
        self.ticks = 0
        self.peak_inflight = None

    def _shard(self, vec, d):
        """Replica d's 1/dp slice of a vector (a copy)."""
        b = chunk_bounds(len(vec), self.L.dp)
        return vec[b[d]:b[d + 1]].copy()

    def _own(self, vec, d):
        """What replica d keeps of a parameter vector: a ZeRO-3 shard, or all of it."""
        return self._shard(vec, d) if self.L.zero == 3 else vec.copy()

    def rank(self, d: int, s: int, t: int) -> int:
        return d * self.L.pp * self.L.tp + (s % self.L.pp) * self.L.tp + t

    # ---- one step ----------------------------------------------------------------------

    def step(self, t: int, x, y) -> float:
        """Train step t (0-based) on the global batch (x, y); return the mean loss."""
        L = self.L
        if len(x) % L.dp:
            raise Infeasible(f"global batch {len(x)} does not divide by dp = {L.dp}")
        work = self._materialize(t)
        losses, grads = [], []
        for d, (xd, yd) in enumerate(zip(np.split(x, L.dp), np.split(y, L.dp))):
            loss, g = self._replica(d, work[d], xd, yd)
            losses.append(loss)
            grads.append(g)
        for p in self.pos:
            self._update(p, [g[p] for g in grads], t + 1)
        return float(sum(losses) / L.dp)

    def _materialize(self, t):
        """Per replica, the full parameter vectors it computes with this step."""
        L = self.L
        if L.zero == 3:
            gathered = {p: self.comm.all_gather([self.theta[d][p] for d in range(L.dp)], tag="zero")
                        for p in self.pos}
            return [{p: gathered[p][d] for p in self.pos} for d in range(L.dp)]
        if L.grad_sync == "ps" and L.ps_mode == "async":
            out = []
            for d in range(L.dp):
                delay = (d * L.staleness) // (L.dp - 1) if L.dp > 1 else L.staleness
                out.append({p: self.history[p][max(0, len(self.history[p]) - 1 - delay)]
                            for p in self.pos})
            return out
        return self.theta

    def _replica(self, d, vecs, x, y):
        """Pipeline forward/backward of replica d; returns (mean loss, grads per position)."""
        L, spec, comm = self.L, self.spec, self.comm
        mb = L.micro_batch or len(x)
        if len(x) % mb:
            raise Infeasible(f"local batch {len(x)} does not divide into micro-batches of {mb}")
        m = len(x) // mb
        xs, ys = np.split(x, m), np.split(y, m)
        views = {p: self.flat[p].views(vecs[p]) for p in self.pos}
        gvecs = {p: np.zeros(self.flat[p].padded, self.dtype) for p in self.pos}
        gviews = {p: self.flat[p].views(gvecs[p]) for p in self.pos}
        caches, losses, last = {}, [0.0] * m, self.n_stages - 1

        def forward(s, i, act):
            shards = [views[s, t] for t in range(L.tp)]
            act = [xs[i]] * L.tp if s == 0 else act
            cs = []
            for blk in self.stages[s]:
                act, c = blk.forward(shards, act, comm)
                cs.append(c)
            dlogits = None
            if s == last:                                  # loss of micro-batch i, scaled 1/m
                out = [spec.loss_and_grad(a, ys[i], 1.0 / m) for a in act]
                losses[i], dlogits = out[0][0], [g for _, g in out]
            caches[s, i] = (cs, dlogits)
            return act

        def backward(s, i, dact):
            cs, dlogits = caches.pop((s, i))
            dact = dlogits if dact is None else dact
            shards = [views[s, t] for t in range(L.tp)]
            for blk, c in zip(reversed(self.stages[s]), reversed(cs)):
                dact, g = blk.backward(shards, c, dact, comm)
                for t in range(L.tp):
                    for name, arr in g[t].items():
                        gviews[s, t][name] += arr
            return dact

        def send(acts, src, dst):
            return [comm.send(a, self.rank(d, src, t), self.rank(d, dst, t), tag="pp")
                    for t, a in enumerate(acts)]

        order = pipeline_order(L.schedule, L.pp, m, L.vpp)
        run = run_schedule(order, L.vpp, forward, backward, send)
        self.ticks, self.peak_inflight = run["ticks"], run["peak_inflight"]
        return sum(losses) / m, gvecs

    def _update(self, p, gs, t):
        """Synchronise the replicas' gradients of position p and update (see module doc)."""
        L, opt, comm, N = self.L, self.opt, self.comm, self.L.dp
        if L.grad_sync == "ps":
            return self._ps_update(p, gs, t)
        if L.sync_rule == "sum_params":
            thetas = []
            for d in range(N):                      # worker i's own step: θ_i(t+1)
                th = self.theta[d][p].copy()
                opt.update(th, gs[d], self.state[d][p], t)
                thetas.append(th)
            total = comm.all_reduce(thetas, tag="dp")
            for d in range(N):
                self.theta[d][p] += total[d]        # θ(t+1) = θ(t) + Σ_i θ_i(t+1)
            return
        scale = 1.0 if L.sync_rule == "sum_grads" else 1.0 / N
        if L.zero == 0:
            g = comm.all_reduce(gs, tag="dp")
            for d in range(N):
                opt.update(self.theta[d][p], g[d] * scale, self.state[d][p], t)
            return
        b = chunk_bounds(len(gs[0]), N)
        if L.zero == 1:
            full = comm.all_reduce(gs, tag="dp")
            gsh = [full[d][b[d]:b[d + 1]] for d in range(N)]
        else:
            gsh = comm.reduce_scatter(gs, tag="zero")
        shards = []
        for d in range(N):
            th = self.theta[d][p] if L.zero == 3 else self.theta[d][p][b[d]:b[d + 1]]
            opt.update(th, gsh[d] * scale, self.state[d][p], t)      # views: in place
            shards.append(th)
        if L.zero < 3:
            new = comm.all_gather(shards, tag="zero")
            for d in range(N):
                self.theta[d][p][...] = new[d]

    def _ps_update(self, p, gs, t):
        N, k = self.L.dp, self.L.ps_servers
        b = chunk_bounds(len(gs[0]), k)

        def server_update(j, gsum):                 # on server j: average, then optimizer
            theta = self.server[p][b[j]:b[j + 1]]
            self.opt.update(theta, gsum * (1.0 / N), self.server_state[p][j], t)
            return theta

        pulled = self.comm.parameter_server(gs, k, server_update, tag="ps")
        for d in range(N):
            self.theta[d][p][...] = pulled[d]
        self.history[p].append(self.server[p].copy())
        del self.history[p][: -(self.L.staleness + 1)]

    # ---- looking at the state ----------------------------------------------------------

    def full_params(self) -> dict:
        """The model's parameters as replica 0 (or the server) holds them, unsharded."""
        per_t = [{} for _ in range(self.L.tp)]
        for p in self.pos:
            if self.L.grad_sync == "ps":
                vec = self.server[p]
            elif self.L.zero == 3:
                vec = np.concatenate([self.theta[d][p] for d in range(self.L.dp)])
            else:
                vec = self.theta[0][p]
            per_t[p[1]].update({n: v.copy() for n, v in self.flat[p].views(vec).items()})
        return self.spec.unshard(per_t)

    def replicas_identical(self) -> bool:
        """Whether every DP replica holds bitwise the same parameters (not for ZeRO-3)."""
        if self.L.zero == 3:
            return True
        return all(np.array_equal(self.theta[d][p], self.theta[0][p])
                   for d in range(self.L.dp) for p in self.pos)

    def memory_elems(self) -> dict[int, dict[str, int]]:
        """Elements each rank keeps between steps: params, grads, optimizer state."""
        L, out = self.L, {}
        for d in range(L.dp):
            for s, t in self.pos:
                f = self.flat[s, t]
                shard = f.padded // L.dp
                r = self.rank(d, s, t)
                e = out.setdefault(r, {"params": 0, "grads": 0, "optimizer": 0})
                e["params"] += shard if L.zero == 3 else f.size
                e["grads"] += shard if L.zero >= 2 else f.size
                if L.grad_sync != "ps":
                    e["optimizer"] += self.opt.state_per_param * (shard if L.zero >= 1 else f.size)
        return out
