"""Scenario → prediction: pick the device, build the cluster, run an engine."""
from __future__ import annotations

from pathlib import Path

from . import hardware
from .cost import collectives as cc
from .cost import placement
from .errors import ScenarioError
from .result import CollectivePrediction
from .scenario import Scenario
from .topology import build_cluster

ENGINES = ("auto", "analytical", "des")


def device_for(sc: Scenario, profile: str | None = None):
    """The scenario's device preset, refined by a calibrated profile when one is given, with
    the attention kernel ``training.attention_kernel`` names (:meth:`Device.with_attention_kernel`)."""
    device = hardware.get_device(sc.gpu, file=sc.file, key="cluster.gpu")
    path = profile or sc.cluster.get("profile")
    if path:
        from .calibrate.profile import load_profile
        p = Path(path)
        if not p.is_absolute() and not p.exists():
            p = Path(sc.base_dir) / p
        prof = load_profile(p)
        device = device.with_overrides(prof.device, file=str(p))
    return device.with_attention_kernel(sc.training.attention_kernel, file=sc.file)


def cluster_for(sc: Scenario):
    table = {k: v for k, v in sc.cluster.items()}
    table.setdefault("topology", "switch" if "gpus" in table else "dgx-a100")
    return build_cluster(table, file=sc.file)


def predict(sc: Scenario, engine: str = "auto", profile: str | None = None, **des_options):
    """Predict one step (or one collective) of ``sc`` with the chosen engine."""
    if engine not in ENGINES:
        raise ScenarioError(f"unknown engine {engine!r}; one of: {', '.join(ENGINES)}", key="--engine")
    device = device_for(sc, profile)
    cluster = cluster_for(sc)
    if len(cluster.devices) < sc.parallel.world:
        raise ScenarioError(f"the layout needs {sc.parallel.world} devices but topology "
                            f"{sc.cluster.get('topology')!r} has {len(cluster.devices)}",
                            file=sc.file, key="cluster")
    if sc.model.kind == "collective":
        return predict_collective(sc, cluster, engine)
    if engine in ("auto", "des"):
        from .engines import des_predict
        return des_predict.predict(sc, device, cluster, **des_options)
    from .engines import analytical
    return analytical.run(sc, device, cluster)


def predict_collective(sc: Scenario, cluster, engine: str = "analytical") -> CollectivePrediction:
    m, p = sc.model, sc.parallel
    n = p.dp
    ranks = list(range(n))
    alg = p.algorithm
    t, used = placement.group_time_s(cluster, ranks, m.op, m.size_bytes, alg)
    engine_used = "analytical"
    notes = ()
    if engine in ("auto", "des"):
        from .engines import des
        from .program import COLLECTIVE, Program
        prog = Program(num_ranks=n)
        prog.add(COLLECTIVE, ranks, "comm", f"{m.op} {m.size_bytes:.0f} B", coll=m.op,
                 algorithm=used, size_bytes=m.size_bytes, category="dp")
        res = des.run(prog, cluster, fidelity="full")
        t, engine_used = res.step_time_s, "des"
        notes = (f"DES: {res.events} events in {res.wall_s:.2f} s",)
    return CollectivePrediction(
        name=sc.name, engine=engine_used, op=m.op, ranks=n, size_bytes=m.size_bytes, time_s=t,
        algbw_GBps=cc.algbw_Bps(m.size_bytes, t) / 1e9,
        busbw_GBps=cc.busbw_Bps(m.op, n, m.size_bytes, t) / 1e9, algorithm=used, notes=notes)
