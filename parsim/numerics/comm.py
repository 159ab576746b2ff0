"""Collectives that really run their algorithms, chunk by chunk, on per-rank numpy arrays.

Every algorithm is a :class:`Schedule`: ``n_ranks`` buffers, each the flattened array cut
into ``n_chunks`` chunks by :func:`chunk_bounds` (``np.array_split`` sizes), and a tuple
of :class:`Step` ``(round, src, dst, chunks, op)``. A step is one message: it carries the
listed chunks of ``src``'s buffer to ``dst``, which adds them in (``op="reduce"``) or
overwrites its own (``op="copy"``). Steps of one round may run at the same time; the
number of rounds is the α count of the Hockney model (Thakur, Rabenseifner, Gropp,
"Optimization of Collective Communication Operations in MPICH", IJHPCA 19(1), 2005):

============================  ==================  ===============================
schedule                      rounds              elements sent per rank
============================  ==================  ===============================
ring_steps(n)                 2(n-1)              2(n-1)/n · S
halving_doubling_steps(n)     2·log2(p) (+2)      2(p-1)/p · S   (p = 2^⌊log2 n⌋)
tree_steps(n, c)              2(depth + c - 1)    up to 3·S      (binary tree)
ring_reduce_scatter_steps(n)  n-1                 (n-1)/n · S    rank r ends with chunk r
ring_all_gather_steps(n)      n-1                 (n-1)/n · S    rank r starts with chunk r
broadcast_steps(n, root)      ⌈log2 n⌉            S              (binomial tree)
ps_push_steps / ps_pull_steps 1 each              S              (workers 0..n-1, servers n..)
============================  ==================  ===============================

Contract with the discrete-event engine (``parsim.engines.des``)
----------------------------------------------------------------
The DES times the very steps this module applies::

    sched  = SCHEDULES["ring"](n)                 # or any *_steps function
    bounds = chunk_bounds(numel, sched.n_chunks)
    deps   = step_deps(sched)                     # deps[i]: steps that must be delivered
                                                  # before step i may start
    # step i starts:   payload = read_payload(bufs, step, bounds)   (a copy)
    #                  bytes   = step_elems(step, bounds) * itemsize
    # step i arrives:  deliver(bufs, step, payload)    (or an on_step hook)

``apply_steps`` is the reference executor: it runs rounds in order, reading all payloads
of a round before delivering any, which is one order ``step_deps`` allows. Any order that
respects ``step_deps`` gives the same arrays, except that two reductions into the same
chunk of the same rank within one round (two tree children) add in arrival order, which
can change the last bit; deliver those in step order to be bit-identical.

:class:`Comm` wraps the schedules as collectives on lists of arrays, logs every
collective (name, tag, rounds, bytes) and takes an ``executor`` to swap the reference
executor for a timed one, and an ``on_step(step, payload)`` observer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np


class Step(NamedTuple):
    """One message: chunks ``chunks`` of rank ``src``'s buffer go to ``dst``."""

    round: int
    src: int
    dst: int
    chunks: tuple[int, ...]
    op: str                 # "reduce" (dst += payload) | "copy" (dst = payload)


@dataclass(frozen=True)
class Schedule:
    """An algorithm as data: who sends which chunks to whom, round by round."""

    name: str
    n_ranks: int
    n_chunks: int
    steps: tuple[Step, ...]

    @property
    def rounds(self) -> int:
        return 1 + max((s.round for s in self.steps), default=-1)


# ---- schedules --------------------------------------------------------------------------

def ring_reduce_scatter_steps(n: int, first_round: int = 0) -> Schedule:
    """Ring reduce-scatter, n-1 rounds: in round k rank r adds chunk (r-k-1) mod n into
    rank r+1. Afterwards rank r holds the full sum of chunk r."""
    steps = [Step(first_round + k, r, (r + 1) % n, ((r - k - 1) % n,), "reduce")
             for k in range(n - 1) for r in range(n)]
    return Schedule("ring_reduce_scatter", n, n, tuple(steps))


def ring_all_gather_steps(n: int, first_round: int = 0) -> Schedule:
    """Ring all-gather, n-1 rounds: rank r starts with chunk r; in round k it copies chunk
    (r-k) mod n to rank r+1."""
    steps = [Step(first_round + k, r, (r + 1) % n, ((r - k) % n,), "copy")
             for k in range(n - 1) for r in range(n)]
    return Schedule("ring_all_gather", n, n, tuple(steps))


def ring_steps(n: int) -> Schedule:
    """Ring all-reduce: reduce-scatter then all-gather, n chunks, 2(n-1) rounds.

    >>> s = ring_steps(3)
    >>> s.rounds, len(s.steps), s.steps[0]
    (4, 12, Step(round=0, src=0, dst=1, chunks=(2,), op='reduce'))
    """
    rs = ring_reduce_scatter_steps(n).steps
    ag = ring_all_gather_steps(n, first_round=n - 1).steps
    return Schedule("ring", n, n, rs + ag)


def tree_steps(n: int, n_chunks: int = 1) -> Schedule:
    """Binary-tree all-reduce (rank 0 the root, children of i are 2i+1 and 2i+2):
    reduce up, then broadcast down, pipelined over ``n_chunks`` chunks.

    A node at depth d sends chunk c to its parent in round (D - d) + c, D the depth of the
    tree; the root then sends chunk c down, reaching depth d in round D + c + d - 1."""
    depth = [0] * n
    for i in range(1, n):
        depth[i] = depth[(i - 1) // 2] + 1
    D = max(depth)
    steps = []
    for c in range(n_chunks):
        for i in range(1, n):
            steps.append(Step(D - depth[i] + c, i, (i - 1) // 2, (c,), "reduce"))
            steps.append(Step(D + c + depth[i] - 1, (i - 1) // 2, i, (c,), "copy"))
    steps.sort(key=lambda s: (s.round, s.op == "copy", s.dst, s.src))
    return Schedule("tree", n, n_chunks, tuple(steps))


def halving_doubling_steps(n: int) -> Schedule:
    """Rabenseifner's all-reduce: recursive-halving reduce-scatter, recursive-doubling
    all-gather over p = 2^⌊log2 n⌋ ranks and p chunks.

    For n not a power of two, r = n - p: first each even rank 2i < 2r adds its whole
    buffer into rank 2i+1 and sits out; at the end rank 2i+1 copies the result back
    (Thakur et al. 2005, §4.2)."""
    p = 1 << (n.bit_length() - 1)
    r = n - p
    real = [2 * i + 1 for i in range(r)] + list(range(2 * r, n))    # core rank -> rank
    every = tuple(range(p))
    steps, rnd = [], 0
    if r:
        steps += [Step(0, 2 * i, 2 * i + 1, every, "reduce") for i in range(r)]
        rnd = 1
    # recursive halving: distance p/2, p/4, ..., 1; the lower partner keeps the lower half
    held = [(0, p)] * p
    dist = p // 2
    while dist >= 1:
        new = []
        for q in range(p):
            lo, hi = held[q]
            mid = (lo + hi) // 2
            keep, give = ((lo, mid), (mid, hi)) if q & dist == 0 else ((mid, hi), (lo, mid))
            steps.append(Step(rnd, real[q], real[q ^ dist], tuple(range(*give)), "reduce"))
            new.append(keep)
        held, dist, rnd = new, dist // 2, rnd + 1
    # recursive doubling: distance 1, 2, ..., p/2; partners swap what they hold
    dist = 1
    while dist < p:
        for q in range(p):
            steps.append(Step(rnd, real[q], real[q ^ dist], tuple(range(*held[q])), "copy"))
        held = [(min(held[q][0], held[q ^ dist][0]), max(held[q][1], held[q ^ dist][1]))
                for q in range(p)]
        dist, rnd = dist * 2, rnd + 1
    if r:
        steps += [Step(rnd, 2 * i + 1, 2 * i, every, "copy") for i in range(r)]
    return Schedule("halving_doubling", n, p, tuple(steps))


def broadcast_steps(n: int, root: int = 0) -> Schedule:
    """Binomial-tree broadcast: in round k, relative ranks j < 2^k copy to j + 2^k."""
    steps, k = [], 0
    while (1 << k) < n:
        for j in range(min(1 << k, n - (1 << k))):
            steps.append(Step(k, (j + root) % n, (j + (1 << k) + root) % n, (0,), "copy"))
        k += 1
    return Schedule("broadcast", n, 1, tuple(steps))


def ps_push_steps(n_workers: int, n_servers: int) -> Schedule:
    """Every worker adds chunk j of its buffer into server j (rank n_workers + j);
    server buffers start at zero. The incast of the parameter server."""
    steps = [Step(0, w, n_workers + j, (j,), "reduce")
             for j in range(n_servers) for w in range(n_workers)]
    return Schedule("ps_push", n_workers + n_servers, n_servers, tuple(steps))


def ps_pull_steps(n_workers: int, n_servers: int) -> Schedule:
    """Server j copies chunk j of its buffer to every worker."""
    steps = [Step(0, n_workers + j, w, (j,), "copy")
             for j in range(n_servers) for w in range(n_workers)]
    return Schedule("ps_pull", n_workers + n_servers, n_servers, tuple(steps))


P2P = Schedule("p2p", 2, 1, (Step(0, 0, 1, (0,), "copy"),))
"""A point-to-point send as a schedule: rank 0's buffer copied to rank 1."""


SCHEDULES: dict[str, Callable[[int], Schedule]] = {
    "ring": ring_steps, "tree": tree_steps, "halving_doubling": halving_doubling_steps,
}


def step_deps(sched: Schedule) -> list[tuple[int, ...]]:
    """For each step, the earlier-round steps it waits for: those that wrote any of its
    chunks on ``src`` (read after write) and those that read its chunks on ``dst`` before
    it overwrites them (write after read)."""
    writes: dict[tuple[int, int], list[int]] = {}   # (rank, chunk) -> step ids writing it
    reads: dict[tuple[int, int], list[int]] = {}
    deps = []
    for i, s in enumerate(sched.steps):
        d = set()
        for c in s.chunks:
            d.update(j for j in writes.get((s.src, c), ()) if sched.steps[j].round < s.round)
            d.update(j for j in reads.get((s.dst, c), ()) if sched.steps[j].round < s.round)
            writes.setdefault((s.dst, c), []).append(i)
            reads.setdefault((s.src, c), []).append(i)
        deps.append(tuple(sorted(d)))
    return deps


# ---- executing steps ---------------------------------------------------------------------

def chunk_bounds(numel: int, n_chunks: int) -> np.ndarray:
    """Start offsets of ``n_chunks`` chunks of ``numel`` elements, plus the end: sizes as in
    ``np.array_split`` (the first numel % n_chunks chunks get one extra element)."""
    q, r = divmod(numel, n_chunks)
    sizes = [q + 1] * r + [q] * (n_chunks - r)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def step_elems(step: Step, bounds) -> int:
    """Number of elements a step carries."""
    return int(sum(bounds[c + 1] - bounds[c] for c in step.chunks))


def read_payload(bufs, step: Step, bounds) -> list[np.ndarray]:
    """Copies of the step's chunks of ``bufs[step.src]`` (taken when the send starts)."""
    return [bufs[step.src][bounds[c]:bounds[c + 1]].copy() for c in step.chunks]


def deliver(bufs, step: Step, payload, bounds) -> None:
    """Apply an arrived payload to ``bufs[step.dst]`` in place."""
    for c, part in zip(step.chunks, payload):
        dst = bufs[step.dst][bounds[c]:bounds[c + 1]]
        if step.op == "reduce":
            dst += part
        else:
            dst[...] = part


def apply_steps(bufs, sched: Schedule, on_step=None) -> list[np.ndarray]:
    """Run ``sched`` on flat 1-D buffers (modified in place and returned), round by round:
    all payloads of a round are read before any is delivered.

    >>> import numpy as np
    >>> apply_steps([np.array([1., 2.]), np.array([10., 20.])], ring_steps(2))
    [array([11., 22.]), array([11., 22.])]
    """
    if any(np.ndim(b) != 1 for b in bufs):
        raise ValueError("apply_steps works on flat 1-D buffers; pass a.reshape(-1)")
    bounds = chunk_bounds(len(bufs[0]), sched.n_chunks)
    by_round: dict[int, list[Step]] = {}
    for s in sched.steps:
        by_round.setdefault(s.round, []).append(s)
    for rnd in sorted(by_round):
        sent = [(s, read_payload(bufs, s, bounds)) for s in by_round[rnd]]
        for s, payload in sent:
            if on_step is not None:
                on_step(s, payload)
            deliver(bufs, s, payload, bounds)
    return bufs


# ---- collectives on lists of per-rank arrays --------------------------------------------

@dataclass
class Comm:
    """Collectives over a group given as a list of per-rank arrays (index = group rank).

    ``algorithm`` picks the all-reduce schedule; ``executor(bufs, sched, on_step)`` runs a
    schedule (default :func:`apply_steps`; a DES can pass one that times each step);
    ``log`` gets one dict per collective: op, tag, algorithm, n, rounds, steps, bytes."""

    algorithm: str = "ring"
    executor: Callable = apply_steps
    on_step: Callable | None = None
    log: list[dict] = field(default_factory=list)

    def _run(self, op, tag, bufs, sched):
        bounds = chunk_bounds(len(bufs[0]), sched.n_chunks)
        size = bufs[0].dtype.itemsize
        nbytes = sum(step_elems(s, bounds) for s in sched.steps) * size
        self.log.append(dict(op=op, tag=tag, algorithm=sched.name, n=sched.n_ranks,
                             rounds=sched.rounds, steps=len(sched.steps), bytes=nbytes,
                             size_bytes=len(bufs[0]) * size))
        return self.executor(bufs, sched, self.on_step)

    def all_reduce(self, arrays, tag="", algorithm=None) -> list[np.ndarray]:
        """Every rank gets the elementwise sum (bitwise identical on every rank)."""
        sched = SCHEDULES[algorithm or self.algorithm](len(arrays))
        bufs = [np.array(a, copy=True).reshape(-1) for a in arrays]
        out = self._run("all_reduce", tag, bufs, sched)
        return [b.reshape(np.shape(arrays[0])) for b in out]

    def reduce_scatter(self, arrays, tag="") -> list[np.ndarray]:
        """Ring reduce-scatter of flat arrays: rank r gets chunk r of the sum."""
        n = len(arrays)
        bufs = [np.array(a, copy=True).reshape(-1) for a in arrays]
        out = self._run("reduce_scatter", tag, bufs, ring_reduce_scatter_steps(n))
        b = chunk_bounds(len(bufs[0]), n)
        return [out[r][b[r]:b[r + 1]].copy() for r in range(n)]

    def all_gather(self, shards, tag="") -> list[np.ndarray]:
        """Ring all-gather: rank r contributes ``shards[r]``; all get the concatenation."""
        n = len(shards)
        full = np.concatenate([np.ravel(s) for s in shards])
        b = chunk_bounds(len(full), n)
        if any(b[r + 1] - b[r] != np.size(shards[r]) for r in range(n)):
            raise ValueError(f"all_gather shard sizes {[np.size(s) for s in shards]} are not "
                             f"np.array_split sizes of {len(full)} elements")
        bufs = []
        for r in range(n):
            buf = np.zeros_like(full)            # only chunk r is known on rank r
            buf[b[r]:b[r + 1]] = np.ravel(shards[r])
            bufs.append(buf)
        return self._run("all_gather", tag, bufs, ring_all_gather_steps(n))

    def broadcast(self, arrays, root=0, tag="") -> list[np.ndarray]:
        """Every rank gets ``arrays[root]`` (binomial tree)."""
        bufs = [np.array(a, copy=True).reshape(-1) for a in arrays]
        out = self._run("broadcast", tag, bufs, broadcast_steps(len(arrays), root))
        return [b.reshape(np.shape(arrays[0])) for b in out]

    def send(self, x, src: int, dst: int, tag="") -> np.ndarray:
        """Point-to-point: a copy of ``x`` as ``dst`` receives it from ``src``.

        With an executor other than :func:`apply_steps` the send runs through it as the
        one-step :data:`P2P` schedule on ``[x, empty]``, so its payload is the real array
        and a timed executor times it: ``executor.send(bufs, src, dst, on_step)`` when the
        executor has one (it is given the global ranks, for placement), else
        ``executor(bufs, P2P, on_step)``."""
        x = np.asarray(x)
        self.log.append(dict(op="send", tag=tag, algorithm="p2p", n=2, rounds=1, steps=1,
                             bytes=x.nbytes, size_bytes=x.nbytes, src=src, dst=dst))
        if self.executor is apply_steps:
            if self.on_step is not None:
                self.on_step(P2P.steps[0], [x])
            return x.copy()
        bufs = [np.array(x, copy=True).reshape(-1), np.zeros(x.size, x.dtype)]
        via = getattr(self.executor, "send", None)
        out = (via(bufs, src, dst, self.on_step) if via is not None
               else self.executor(bufs, P2P, self.on_step))
        return out[1].reshape(x.shape)

    def parameter_server(self, grads, n_servers: int, server_update, tag="ps") -> list[np.ndarray]:
        """Workers push flat ``grads`` to ``n_servers`` servers (server j owns chunk j and
        sums the workers' chunks), ``server_update(j, summed_chunk) -> new_chunk`` runs on
        server j, and every worker pulls the new chunks back. Returns the workers' buffers."""
        n = len(grads)
        bufs = [np.array(g, copy=True).reshape(-1) for g in grads]
        bufs += [np.zeros_like(bufs[0]) for _ in range(n_servers)]
        bounds = chunk_bounds(len(bufs[0]), n_servers)
        self._run("ps_push", tag, bufs, ps_push_steps(n, n_servers))
        for j in range(n_servers):
            sl = slice(bounds[j], bounds[j + 1])
            bufs[n + j][sl] = server_update(j, bufs[n + j][sl])
        self._run("ps_pull", tag, bufs, ps_pull_steps(n, n_servers))
        return bufs[:n]

    def bytes_by_tag(self) -> dict[str, int]:
        """Total bytes moved per tag (dp, tp, pp, zero, ps)."""
        out: dict[str, int] = {}
        for e in self.log:
            out[e["tag"]] = out.get(e["tag"], 0) + e["bytes"]
        return out
