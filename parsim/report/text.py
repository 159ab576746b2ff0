"""Human-readable reports. The one place numbers get their units back."""
from __future__ import annotations

from ..result import CollectivePrediction, Prediction


def fmt_time(s: float) -> str:
    """Seconds with a readable unit.

    >>> fmt_time(0.0123)
    '12.30 ms'
    """
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.2f} us"


def fmt_bytes(b: float) -> str:
    """Bytes with a binary unit.

    >>> fmt_bytes(80 * 2**30)
    '80.00 GiB'
    """
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= scale:
            return f"{b / scale:.2f} {unit}"
    return f"{b:.0f} B"


def fmt_rate(x: float, unit: str) -> str:
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f} {prefix}{unit}"
    return f"{x:.2f} {unit}"


def render(pred) -> str:
    if isinstance(pred, CollectivePrediction):
        return _collective(pred)
    return _step(pred)


def _collective(c: CollectivePrediction) -> str:
    lines = [f"{c.name}",
             f"  {c.op} of {fmt_bytes(c.size_bytes)} over {c.ranks} ranks ({c.algorithm}, "
             f"{c.engine} engine)",
             f"  time      {fmt_time(c.time_s)}",
             f"  algbw     {c.algbw_GBps:.2f} GB/s",
             f"  busbw     {c.busbw_GBps:.2f} GB/s"]
    lines += [f"  note: {n}" for n in c.notes]
    return "\n".join(lines)


def _step(p: Prediction) -> str:
    L = p.layout
    lay = (f"dp={L['dp']} tp={L['tp']} pp={L['pp']}" + (f" cp={L['cp']}" if L['cp'] > 1 else "")
           + (f" ep={L['ep']}" if L['ep'] > 1 else "") + (f" vpp={L['vpp']}" if L['vpp'] > 1 else "")
           + f" schedule={L['schedule']} zero={L['zero']} micro_batch={L['micro_batch']}"
           f" ({L['microbatches']} per pipeline) recompute={L['recompute']}"
           + (" sp" if L["sequence_parallel"] else ""))
    lines = [f"{p.name}",
             f"  {p.num_gpus} x {p.device}, {lay}, {p.engine} engine",
             "",
             f"  step time         {fmt_time(p.step_time_s)}",
             f"  throughput        {p.samples_per_s:.2f} samples/s, "
             f"{fmt_rate(p.tokens_per_s, 'tokens/s')}",
             f"  model FLOP/s      {p.model_tflops_per_gpu:.1f} TFLOP/s per GPU  (MFU {p.mfu:.1%})",
             f"  hardware FLOP/s   {p.hardware_tflops_per_gpu:.1f} TFLOP/s per GPU  (HFU {p.hfu:.1%})",
             "", "  where the time goes"]
    total = p.step_time_s
    b = p.breakdown_s
    for key in ("compute", "bubble", "exposed_comm", "optimizer"):
        lines.append(f"    {key:<14} {fmt_time(b[key]):>12}  {b[key] / total:6.1%}")
    for dim, v in p.comm_s.items():
        if v > 0:
            lines.append(f"      comm {dim:<7} {fmt_time(v):>12}  {v / total:6.1%}")
    mem = p.memory_bytes
    lines += ["", f"  memory per device (stage {mem.get('stage', 0)})"]
    for key in ("params", "grads", "optimizer", "activations"):
        lines.append(f"    {key:<14} {fmt_bytes(mem[key]):>12}")
    verdict = "fits" if p.fits_in_memory else "DOES NOT FIT"
    lines.append(f"    {'total':<14} {fmt_bytes(mem['total']):>12}  of "
                 f"{fmt_bytes(mem['capacity'])}: {verdict}")
    if not p.fits_in_memory:
        lines.append(f"    needs {fmt_bytes(mem['total'])}, {p.device} has "
                     f"{fmt_bytes(mem['capacity'])}: shard more (zero, tp, pp) or recompute")
    lines += [f"  note: {n}" for n in p.notes]
    return "\n".join(lines)
