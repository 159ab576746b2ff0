"""Capacity planning: the fastest (or cheapest) layouts of a model on up to N GPUs.

:func:`plan` enumerates every valid layout of the scenario's model on its cluster
(or on several cluster sizes): TP dividing the heads (within a node unless asked),
PP dividing the layers, DP the rest, micro-batch size, schedule and virtual stages,
ZeRO stage, recompute mode, sequence parallelism. It drops the layouts that do not
fit in device memory (counting them by their largest memory part), ranks the rest by
step time with the closed forms (:mod:`parsim.planner_grid`, all layouts of a rank
grid at once as numpy arrays, equal to the analytical engine), then re-times the
best K with the discrete-event engine and orders those by its step time.

Objectives: ``time`` (step time) or ``cost`` (GPU-hours per step, step · GPUs / 3600 s/h,
priced with ``cluster.price_per_gpu_hour`` when given). Over several cluster sizes
the Pareto frontier of step time against GPUs says what more GPUs buy.
"""
from __future__ import annotations

import time
from dataclasses import replace

from .errors import ParsimError, ScenarioError
from .planner_grid import (RECOMPUTE, SCHEDULES, Context, Skeleton, Space, layout_scenario,
                           scenario_for_gpus, skeletons)
from .planner_sweep import REASONS, Spec, context, sweep
from .scenario import Scenario, check_layout

OBJECTIVES = ("time", "cost")


def objective_value(rec: dict, objective: str, step_key: str = "step_time_s") -> float:
    """Seconds per step (time) or GPU-hours per step (cost)."""
    step = rec.get(step_key, rec["step_time_s"])
    return step if objective == "time" else step * rec["gpus"] / 3600.0


def _order_key(rec: dict, objective: str, step_key: str = "step_time_s"):
    p, t = rec["parallel"], rec["training"]
    return (objective_value(rec, objective, step_key), rec["step_time_s"], rec["gpus"], p["tp"],
            p["pp"], p["cp"], p["vpp"], p["schedule"], p["zero"], p["sequence_parallel"],
            t["micro_batch"], t["recompute"])


def layout_key(rec: dict) -> tuple:
    p, t = rec["parallel"], rec["training"]
    return (rec["gpus"], p["tp"], p["pp"], p["cp"], p["dp"], p["vpp"], p["schedule"], p["zero"],
            p["sequence_parallel"], t["micro_batch"], t["recompute"])


def scenario_of(sc: Scenario, rec: dict) -> Scenario:
    """The scenario running layout ``rec`` (validated like a scenario file)."""
    p, t = rec["parallel"], rec["training"]
    sk = Skeleton(rec["gpus"], p["tp"], p["cp"], p["pp"], p["dp"])
    out = layout_scenario(sc, sk, t["micro_batch"], p["schedule"], p["vpp"], p["zero"],
                          t["recompute"], p["sequence_parallel"])
    check_layout(out, rec["gpus"])
    return out


def reference_record(sc: Scenario, ctx: Context) -> dict | None:
    """The scenario's own layout, predicted by the analytical engine, as a plan record."""
    from .engines import analytical
    p, t = sc.parallel, sc.training
    if p.world != len(ctx.cluster.devices) or p.stage_layers:
        return None
    pred = analytical.run(replace(sc, cluster=ctx.sc.cluster), ctx.device, ctx.cluster)
    mem = pred.memory_bytes
    return {"gpus": p.world,
            "parallel": {"dp": p.dp, "tp": p.tp, "pp": p.pp, "cp": p.cp, "vpp": p.vpp,
                         "schedule": p.schedule, "sequence_parallel": p.sequence_parallel,
                         "zero": p.zero},
            "training": {"global_batch": t.global_batch, "micro_batch": t.micro_batch,
                         "recompute": t.recompute},
            "microbatches": sc.microbatches, "step_time_s": pred.step_time_s, "mfu": pred.mfu,
            "memory_bytes": mem["total"], "fits": pred.fits_in_memory,
            "compute_s": pred.breakdown_s["compute"], "bubble_s": pred.breakdown_s["bubble"],
            "exposed_comm_s": pred.breakdown_s["exposed_comm"],
            "tp_s": pred.comm_s["tp"], "pp_s": pred.comm_s["pp"],
            "dp_s": pred.comm_s["dp"] + pred.comm_s["ps"],
            "optimizer_s": pred.breakdown_s["optimizer"]}


def plan(sc: Scenario, space: Space, *, objective: str = "time", top: int = 10, retime: int = 20,
         retime_budget_s: float = 20.0, workers: int = 1, dask=None, out=None,
         progress=None) -> dict:
    """Search, rank, re-time; one JSON-ready dict (see the module docstring)."""
    if objective not in OBJECTIVES:
        raise ParsimError(f"--objective {objective!r}: one of {', '.join(OBJECTIVES)}",
                          key="--objective")
    t0 = time.perf_counter()
    for n in space.gpus:
        scenario_for_gpus(sc, n)      # a size the topology cannot take is a user mistake
    sks = skeletons(sc, space)
    if not sks:
        raise ScenarioError(f"no layout of {sc.model.name or 'the model'} divides "
                            f"{', '.join(map(str, space.gpus))} GPUs with global_batch = "
                            f"{sc.training.global_batch}", file=sc.file, key="cluster")
    spec = Spec(sc, space, keep=max(top, retime, 1))
    records, chunks = sweep(spec, sks, workers=workers, dask=dask, out=out, progress=progress)
    if progress:
        progress.close()
    layouts = sorted((r for rec in records for r in rec["layouts"]),
                     key=lambda r: _order_key(r, objective))
    infeasible = {k: sum(rec["infeasible"][k] for rec in records) for k in REASONS}
    result = {
        "scenario": sc.name, "file": sc.file, "objective": objective,
        "gpus": list(space.gpus), "device": context(sc, space.gpus[0]).device.name,
        "evaluated": sum(rec["evaluated"] for rec in records),
        "infeasible": {"count": sum(infeasible.values()), "by_largest_part": infeasible},
        "chunks": chunks, "pareto": pareto(layouts),
    }
    price = sc.cluster.get("price_per_gpu_hour")
    best = layouts[:max(top, retime)]
    result["retime"] = retime_des(sc, best[:retime], workers, retime_budget_s)
    timed = [r for r in best if "des_step_time_s" in r]     # re-timed first, by the DES
    best = sorted(timed, key=lambda r: _order_key(r, objective, "ranking_step_s")) \
        + [r for r in best if "des_step_time_s" not in r]
    for i, rec in enumerate(best):
        rec["rank"] = i + 1
        rec["gpu_hours_per_step"] = rec.get("ranking_step_s", rec["step_time_s"]) * rec["gpus"] / 3600
        if isinstance(price, (int, float)):
            rec["cost_per_step"] = rec["gpu_hours_per_step"] * price
    result["layouts"] = best[:top]
    ctx = context(sc, sc.parallel.world) if sc.parallel.world in space.gpus else None
    ref = reference_record(sc, ctx) if ctx else None
    result["reference"] = ref
    result["explanation"] = explain(result["layouts"], ref, objective, result)
    result["seconds"] = time.perf_counter() - t0
    return result


def pareto(layouts: list[dict]) -> list[dict]:
    """Best step time per GPU count, marked ``frontier`` when no smaller count is as fast."""
    best: dict = {}
    for r in layouts:
        if r["gpus"] not in best or r["step_time_s"] < best[r["gpus"]]["step_time_s"]:
            best[r["gpus"]] = r
    out, fastest = [], float("inf")
    for n in sorted(best):
        r = best[n]
        frontier = r["step_time_s"] < fastest
        fastest = min(fastest, r["step_time_s"])
        out.append({"gpus": n, "step_time_s": r["step_time_s"], "mfu": r["mfu"],
                    "frontier": frontier, "parallel": r["parallel"], "training": r["training"]})
    return out


def _time_key(rec: dict) -> tuple:
    """Layouts the engines time identically (ZeRO 1 and 2 differ only in memory)."""
    k = list(layout_key(rec))
    k[7] = 1 if k[7] == 2 else k[7]
    return tuple(k)


def _des_step(args):
    sc, rec = args
    from .engines import des_predict
    ctx = context(sc, rec["gpus"])
    return des_predict.predict(scenario_of(sc, rec), ctx.device, ctx.cluster).step_time_s


def retime_des(sc: Scenario, recs: list[dict], workers: int, budget_s: float) -> dict:
    """Re-time ``recs`` with the DES (best first, until ``budget_s`` is spent); sets
    ``des_step_time_s`` and ``ranking_step_s`` on each. Falls back to the closed form."""
    for r in recs:
        r["ranking_step_s"] = r["step_time_s"]
    jobs: dict = {}
    for r in recs:
        jobs.setdefault(_time_key(r), []).append(r)
    t0 = time.perf_counter()
    done = 0
    for key, step in _run_des(sc, [v[0] for v in jobs.values()], workers, budget_s):
        for r in jobs[key]:
            r["des_step_time_s"] = r["ranking_step_s"] = step
            done += 1
    note = (f"{done} of {len(recs)} re-timed with the DES ({len(jobs)} distinct programs) in "
            f"{time.perf_counter() - t0:.1f} s")
    if done < len(recs):
        note += f"; the rest kept their closed-form time (budget {budget_s:g} s)"
    return {"engine": "des", "count": done, "note": note}


def _run_des(sc, recs, workers, budget_s):
    """Yield (time key, DES step time) for as many of ``recs`` as the budget allows."""
    t0 = time.perf_counter()
    if workers <= 1 or len(recs) <= 1:
        for r in recs:
            if time.perf_counter() - t0 > budget_s:
                return
            yield _time_key(r), _des_step((sc, r))
        return
    import multiprocessing as mp
    method = "fork" if "fork" in mp.get_all_start_methods() else None
    pool = mp.get_context(method).Pool(min(workers, len(recs)))
    try:
        pending = [(_time_key(r), pool.apply_async(_des_step, ((sc, r),))) for r in recs]
        while pending and time.perf_counter() - t0 < budget_s:
            ready = [item for item in pending if item[1].ready()]
            for item in ready:
                pending.remove(item)
                yield item[0], item[1].get()
            if not ready:
                time.sleep(0.05)
    finally:
        pool.terminate()          # DES runs past the budget are not waited for
        pool.join()


def describe(rec: dict) -> str:
    """``tp8 pp8 dp16 interleaved v3 mb1 zero1 selective sp`` for a layout record."""
    p, t = rec["parallel"], rec["training"]
    s = f"tp{p['tp']} pp{p['pp']} dp{p['dp']}" + (f" cp{p['cp']}" if p["cp"] > 1 else "")
    s += " " + (f"interleaved v{p['vpp']}" if p["schedule"] == "interleaved" else p["schedule"])
    s += f" mb{t['micro_batch']} zero{p['zero']} {t['recompute']}"
    return s + (" sp" if p["sequence_parallel"] else "")


_WHY = {
    "compute_s": "compute",
    "bubble_s": "pipeline bubble",
    "tp_s": "exposed TP communication",
    "pp_s": "pipeline sends",
    "dp_s": "exposed gradient sync / ZeRO gathers",
    "optimizer_s": "optimizer step",
}


def _because(key: str, best: dict, ref: dict) -> str:
    bp, rp, bt, rt = best["parallel"], ref["parallel"], best["training"], ref["training"]
    why = []
    if key == "compute_s":
        if bt["recompute"] != rt["recompute"]:
            why.append(f"recompute {rt['recompute']} → {bt['recompute']}")
        if bt["micro_batch"] != rt["micro_batch"]:
            why.append(f"micro-batch {rt['micro_batch']} → {bt['micro_batch']} (GEMM shapes)")
        if bp["tp"] != rp["tp"]:
            why.append(f"tp {rp['tp']} → {bp['tp']}")
    elif key == "bubble_s":
        f = lambda r: (r["parallel"]["pp"] - 1) / (r["parallel"]["vpp"] * r["microbatches"])  # noqa: E731
        why.append(f"(p-1)/(v·m) = {f(ref):.3f} → {f(best):.3f} (p={rp['pp']}→{bp['pp']}, "
                   f"v={rp['vpp']}→{bp['vpp']}, m={ref['microbatches']}→{best['microbatches']})")
    elif key == "tp_s":
        if bp["tp"] != rp["tp"]:
            why.append(f"tp {rp['tp']} → {bp['tp']}")
        if (bt["recompute"] == "full") != (rt["recompute"] == "full"):
            why.append("full recompute repeats the forward all-reduces"
                       if bt["recompute"] == "full" else "no recomputed forward all-reduces")
        if bp["sequence_parallel"] != rp["sequence_parallel"]:
            why.append("sequence parallel " + ("on" if bp["sequence_parallel"] else "off"))
    elif key == "dp_s":
        why.append(f"dp {rp['dp']} → {bp['dp']}, zero {rp['zero']} → {bp['zero']}")
    return f" ({'; '.join(why)})" if why else ""


def explain(layouts: list[dict], ref: dict | None, objective: str, result: dict) -> str:
    """Why the best layout wins, part by part, against the scenario's own layout."""
    if not layouts:
        return "no layout fits in device memory; add GPUs, recompute, ZeRO or pipeline stages"
    best = layouts[0]
    lines = [f"best: {describe(best)} on {best['gpus']} GPUs, "
             f"{best['step_time_s']:.3f} s/step (closed form), MFU {best['mfu']:.1%}, "
             f"{best['memory_bytes'] / 2**30:.1f} GiB per GPU"]
    if ref is None:
        return lines[0]
    in_top = [r["rank"] for r in layouts if layout_key(r) == layout_key(ref)]
    where = (f"rank {in_top[0]} of this table" if in_top else "not in this table")
    lines.append(f"scenario's layout: {describe(ref)}, {ref['step_time_s']:.3f} s/step, "
                 f"MFU {ref['mfu']:.1%}, {ref['memory_bytes'] / 2**30:.1f} GiB ({where})")
    gain = ref["step_time_s"] - best["step_time_s"]
    if gain <= 0 or (in_top and in_top[0] == 1):
        lines.append("the scenario's layout is already the fastest that fits")
        return "\n".join(lines)
    lines.append(f"the best is {gain:.3f} s ({gain / ref['step_time_s']:.1%}) faster per step:")
    parts = sorted(_WHY, key=lambda k: best[k] - ref[k])
    for k in parts:
        d = best[k] - ref[k]
        if abs(d) >= 0.005 * ref["step_time_s"]:
            lines.append(f"  {_WHY[k]:<38} {ref[k]:8.3f} s → {best[k]:8.3f} s ({d:+.3f} s)"
                         + _because(k, best, ref))
    return "\n".join(lines)


__all__ = ["plan", "Space", "pareto", "explain", "describe", "scenario_of", "SCHEDULES", "RECOMPUTE"]
