"""Running a layout search: chunks on a process pool or a Dask cluster, resumable.

The unit of work is one skeleton (:class:`parsim.planner_grid.Skeleton`): a worker
evaluates all its layouts as arrays and returns a small record — how many it
evaluated, how many do not fit and why, and its best ``keep`` layouts that fit.
Within one cluster size the ranking by time and by cost is the same order, so the
best ``keep`` of every chunk hold the overall best ``keep`` whatever the objective.

``out`` (JSON Lines) gets one line per finished chunk, flushed and fsynced before the
next; a rerun of the same search reads it, skips the chunks already there (a
truncated last line from a killed run is ignored) and evaluates only the rest, so
the merged result is the same as an uninterrupted run's.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from .errors import ParsimError
from .planner_grid import Context, Skeleton, Space, evaluate, layout_dict
from .scenario import Scenario

REASONS = ("activations", "optimizer state", "weights and gradients")


@dataclass(frozen=True)
class Spec:
    """What every worker needs: the scenario, the search space, how many to keep."""
    scenario: Scenario
    space: Space
    keep: int

    @property
    def id(self) -> str:
        """Fingerprint of the search: lines of another search in ``out`` are not reused."""
        return hashlib.sha256(repr((self.scenario, self.space, self.keep)).encode()).hexdigest()[:16]


_CONTEXTS: dict = {}


def context(sc: Scenario, gpus: int) -> Context:
    """This process's Context for a scenario and cluster size (built once, caches kept)."""
    key = (hashlib.sha256(repr(sc).encode()).hexdigest(), gpus)
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        if len(_CONTEXTS) > 16:
            _CONTEXTS.clear()
        ctx = _CONTEXTS[key] = Context.build(sc, gpus)
    return ctx


def run_chunk(spec: Spec, sk: Skeleton) -> dict:
    """Evaluate every layout of one skeleton; the record written to ``out``."""
    t0 = time.perf_counter()
    ctx = context(spec.scenario, sk.gpus)
    cols = evaluate(ctx, sk, spec.space)
    rec = {"spec": spec.id, "chunk": sk.key, "evaluated": int(cols["n"]),
           "infeasible": dict.fromkeys(REASONS, 0), "layouts": []}
    if cols["n"]:
        fits = cols["fits"]
        parts = np.stack([cols["mem_activations"], cols["mem_optimizer"],
                          cols["mem_params"] + cols["mem_grads"]])
        why = np.argmax(parts, axis=0)[~fits]
        for i, reason in enumerate(REASONS):
            rec["infeasible"][reason] = int(np.count_nonzero(why == i))
        ok = np.flatnonzero(fits)
        best = ok[np.argsort(cols["step_time_s"][ok], kind="stable")[:spec.keep]]
        rec["layouts"] = [layout_dict(cols, int(i), spec.scenario) for i in best]
    rec["seconds"] = time.perf_counter() - t0
    return rec


def _cost(sk: Skeleton) -> float:
    """Rough work of a chunk (collective placement over dp ranks per stage dominates)."""
    return sk.pp * sk.dp * max(1.0, np.log2(sk.dp + 1)) + 1


def read_done(path, spec_id: str) -> dict:
    """Records of this search already in ``path`` (chunk key → record)."""
    done = {}
    if not path or not os.path.exists(path):
        return done
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue    # a line cut short by a killed run
            if isinstance(rec, dict) and rec.get("spec") == spec_id and "chunk" in rec:
                done[rec["chunk"]] = rec
    return done


class _Appender:
    """Append one JSON line per record, flushed and fsynced (crash-safe resume)."""

    def __init__(self, path):
        self.f = None
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            self.f = open(path, "a+b")
            self.f.seek(0, os.SEEK_END)
            if self.f.tell():
                self.f.seek(-1, os.SEEK_END)
                if self.f.read(1) != b"\n":     # finish a line a killed run cut short
                    self.f.write(b"\n")

    def write(self, rec: dict) -> None:
        if self.f:
            self.f.write((json.dumps(rec) + "\n").encode())
            self.f.flush()
            os.fsync(self.f.fileno())

    def close(self) -> None:
        if self.f:
            self.f.close()


def sweep(spec: Spec, sks: list[Skeleton], *, workers: int = 1, dask=None, out=None,
          progress=None, on_record=None) -> tuple[list[dict], dict]:
    """Evaluate every skeleton (skipping those ``out`` already holds); returns the
    records in skeleton order and counts {"chunks", "resumed", "run"}."""
    done = read_done(out, spec.id)
    todo = sorted((sk for sk in sks if sk.key not in done), key=_cost, reverse=True)
    counts = {"chunks": len(sks), "resumed": len(sks) - len(todo), "run": len(todo)}
    if progress:
        progress.update(done=counts["resumed"], total=len(sks))
    app = _Appender(out)
    try:
        for rec in _results(spec, todo, workers, dask):
            done[rec["chunk"]] = rec
            app.write(rec)
            if progress:
                progress.update()
            if on_record:
                on_record(rec)
    finally:
        app.close()
    return [done[sk.key] for sk in sks], counts


def _results(spec, todo, workers, dask):
    if not todo:
        return
    if dask is not None:
        yield from _dask_results(spec, todo, dask)
    elif workers <= 1 or len(todo) == 1:
        for sk in todo:
            yield run_chunk(spec, sk)
    else:
        yield from _pool_results(spec, todo, workers)


def _pool_results(spec, todo, workers):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    method = "fork" if "fork" in mp.get_all_start_methods() else None
    for n in sorted({sk.gpus for sk in todo}):
        context(spec.scenario, n)          # built once here; forked workers inherit it
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                             mp_context=mp.get_context(method)) as pool:
        futures = [pool.submit(run_chunk, spec, sk) for sk in todo]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _dask_results(spec, todo, address):
    """Chunks on a dask.distributed cluster: ``address`` is a scheduler address or a Client."""
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise ParsimError("--dask needs dask.distributed: pip install 'dask[distributed]'",
                          key="--dask") from None
    own = not isinstance(address, Client)
    try:
        client = Client(address, timeout="20s") if own else address
    except (OSError, TimeoutError) as err:
        raise ParsimError(f"cannot reach the Dask scheduler at {address!r}: {err}",
                          key="--dask") from None
    try:
        spec_f = client.scatter(spec, broadcast=True)
        futures = [client.submit(run_chunk, spec_f, sk, key=f"parsim-plan-{spec.id}-{sk.key}")
                   for sk in todo]
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        if own:
            client.close()
