"""Read a calibrated hardware profile (``profiles/*.toml``, written by ``parsim calibrate``).

Tables: ``[meta]`` (free-form provenance), ``[device]`` (overrides of
:class:`parsim.hardware.Device` fields, same names, SI numbers or unit strings, plus ``base``
naming the preset they override), ``[[gemm]]`` (m, n, k, dtype, time_s, flops_per_s,
spread, and ``threads``: the BLAS threads it ran with; rows with ``threads = 1`` are the
single-thread table, see :meth:`Profile.gemm_rows`), ``[[memory]]`` and ``[[collective]]`` (backend, op, ranks, size_bytes[],
time_s[], spread[], alpha_s, bw_Bps, fit_rel_err, ci, segment[]).

Predictions: :meth:`Profile.collective_time_s` interpolates the measured table linearly in
log(size)-log(time); outside it the nearest alpha-beta segment extrapolates, scaled to meet
the table's edge point so the curve stays continuous. :meth:`Profile.gemm_flops_per_s`
interpolates measured throughput over log(m), log(n), log(k) (inverse distance, power 4:
the nearest shape dominates; an exact shape returns its own figure; each dimension is
clamped to the measured range, so throughput stays flat beyond the grid).
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field

import numpy as np

from ..errors import ScenarioError, UnitError, did_you_mean, one_of
from .. import units

DEVICE_FIELDS = {"name": str, "base": str, "peak_flops": "flops", "mem_bytes": "bytes",
                 "mem_bw_Bps": "bandwidth", "sm_count": int, "gemm_eff": float, "mem_eff": float,
                 "launch_s": "time", "attn_eff": float, "attn_kernels": dict,
                 "sources": dict}
DTYPES = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8")
_DTYPE_ALIASES = {"float64": "fp64", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16",
                  "half": "fp16", "float": "fp32", "double": "fp64"}
OPS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "send_recv")
_OP_ALIASES = {"allreduce": "all_reduce", "reducescatter": "reduce_scatter",
               "allgather": "all_gather", "bcast": "broadcast", "p2p": "send_recv",
               "sendrecv": "send_recv"}
_TOP_KEYS = ("meta", "device", "gemm", "memory", "collective", "attention")
_GEMM_KEYS = ("m", "n", "k", "dtype", "time_s", "flops_per_s", "spread")


LARGE_MESSAGE_BYTES = 16 * 2**20   # from here on a message measures bandwidth, not latency

def normalize_op(op: str) -> str:
    key = op.lower().replace("-", "_")
    return _OP_ALIASES.get(key.replace("_", ""), key)


def normalize_dtype(dtype: str) -> str:
    return _DTYPE_ALIASES.get(dtype.lower(), dtype.lower())


@dataclass(frozen=True)
class Collective:
    """One measured (backend, op, ranks) curve with its fits."""

    backend: str
    op: str
    ranks: int
    size_bytes: tuple[float, ...]
    time_s: tuple[float, ...]
    alpha_s: float
    bw_Bps: float
    segments: tuple[dict, ...] = ()
    extra: dict = field(default_factory=dict)

    def time_at(self, size_bytes: float) -> float:
        """Log-log interpolation inside the table, scaled segment fit outside it."""
        s, t = np.asarray(self.size_bytes), np.asarray(self.time_s)
        if s[0] <= size_bytes <= s[-1]:
            return float(np.exp(np.interp(np.log(size_bytes), np.log(s), np.log(t))))
        edge = 0 if size_bytes < s[0] else -1
        segs = self.segments or ({"alpha_s": self.alpha_s, "bw_Bps": self.bw_Bps},)
        seg = segs[edge]

        def fit(x):
            return seg["alpha_s"] + x / seg["bw_Bps"]
        return float(t[edge] * fit(size_bytes) / fit(s[edge]))


@dataclass(frozen=True)
class Profile:
    """A calibrated profile: provenance, Device overrides and the measured tables."""

    path: str
    meta: dict
    device: dict
    gemm: tuple[dict, ...]
    collectives: tuple[Collective, ...]
    memory: tuple[dict, ...] = ()
    attention: tuple[dict, ...] = ()     # fused attention rows (GPU calibrations)

    def collective_time_s(self, op: str, ranks: int, size_bytes: float, *,
                          backend: str | None = None) -> float | None:
        """Seconds for ``op`` over ``ranks`` ranks and ``size_bytes`` (nccl-tests sizes),
        or None when the profile has no curve for that op and group size."""
        op = normalize_op(op)
        for c in self.collectives:
            if c.op == op and c.ranks == ranks and (backend is None or c.backend == backend):
                return c.time_at(float(size_bytes)) if size_bytes > 0 else 0.0
        return None

    def bandwidth_ratios(self, other: "Profile", *, min_bytes: float = LARGE_MESSAGE_BYTES) -> dict:
        """algbw (S/t) of this profile over ``other``'s, per (backend, op, ranks, size) that
        both measured at ``min_bytes`` or more: the check that two runs agree."""
        theirs = {(c.backend, c.op, c.ranks, s): t for c in other.collectives
                  for s, t in zip(c.size_bytes, c.time_s)}
        return {(c.backend, c.op, c.ranks, int(s)): theirs[(c.backend, c.op, c.ranks, s)] / t
                for c in self.collectives for s, t in zip(c.size_bytes, c.time_s)
                if s >= min_bytes and (c.backend, c.op, c.ranks, s) in theirs}

    def gemm_rows(self, dtype: str = "fp32", threads: int | None = None) -> list[dict]:
        """GEMM rows of ``dtype`` measured with ``threads`` BLAS threads; ``threads=None``:
        the all-threads rows (those without ``threads``, or with the largest count)."""
        dtype = normalize_dtype(dtype)
        rows = [r for r in self.gemm if r["dtype"] == dtype]
        if threads is not None:
            return [r for r in rows if r.get("threads") == threads]
        most = max((r.get("threads", 0) for r in rows), default=0)
        return [r for r in rows if r.get("threads") is None or r["threads"] == most]

    def gemm_flops_per_s(self, m: int, n: int, k: int, dtype: str = "fp32",
                         threads: int | None = None) -> float | None:
        """Measured FLOP/s of an m×k by k×n GEMM, interpolated; None without that dtype (or
        without rows for ``threads`` BLAS threads; None: all threads, see :meth:`gemm_rows`)."""
        rows = self.gemm_rows(dtype, threads)
        if not rows:
            return None
        shapes = np.log([[r["m"], r["n"], r["k"]] for r in rows])
        at = np.clip(np.log([m, n, k]), shapes.min(axis=0), shapes.max(axis=0))  # flat outside
        rates = np.log([r["flops_per_s"] for r in rows])
        dist = np.linalg.norm(shapes - at, axis=1)
        if dist.min() < 1e-12:
            return float(rows[int(dist.argmin())]["flops_per_s"])
        weights = dist ** -4.0
        return float(np.exp(weights @ rates / weights.sum()))


def load_profile(path, *, file_key: str | None = None) -> Profile:
    """Read and check a profile TOML. ``file_key`` is the key that named this file in the
    file that referred to it (e.g. ``"cluster.profile"``), quoted when it cannot be read."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ScenarioError(f"profile {path!r} not found; run `parsim calibrate -o {path}`",
                            key=file_key) from None
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ScenarioError(f"cannot read profile: {err}", file=path, key=file_key) from err
    for key in raw:
        if key not in _TOP_KEYS:
            raise ScenarioError(f"unknown table{did_you_mean(key, _TOP_KEYS)}; {one_of(_TOP_KEYS)}",
                                file=path, key=key)
    meta = _table(raw.get("meta", {}), path, "meta")
    device = _device(_table(raw.get("device", {}), path, "device"), path)
    gemm = tuple(_gemm(row, path, f"gemm[{i}]") for i, row in enumerate(_rows(raw, "gemm", path)))
    memory = tuple(_table(r, path, f"memory[{i}]") for i, r in enumerate(_rows(raw, "memory", path)))
    attention = tuple(_table(r, path, f"attention[{i}]")
                      for i, r in enumerate(_rows(raw, "attention", path)))
    colls = tuple(_collective(row, path, f"collective[{i}]")
                  for i, row in enumerate(_rows(raw, "collective", path)))
    return Profile(path=path, meta=meta, device=device, gemm=gemm, collectives=colls, memory=memory,
                   attention=attention)


def _table(value, path, key) -> dict:
    if not isinstance(value, dict):
        raise ScenarioError(f"must be a table, got {value!r}", file=path, key=key)
    return value


def _rows(raw, name, path) -> list:
    rows = raw.get(name, [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ScenarioError(f"must be an array of tables ([[{name}]])", file=path, key=name)
    return rows


def _number(value, path, key, kind="number", positive=True) -> float:
    try:
        if kind in ("bytes", "bandwidth", "time", "flops"):
            x = getattr(units, f"parse_{kind}")(value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UnitError(f"{value!r} is not a number")
        else:
            x = float(value)
    except UnitError as err:
        raise ScenarioError(err.detail, file=path, key=key) from None
    if math.isnan(x) or (x <= 0 if positive else x < 0):
        raise ScenarioError(f"= {value!r}: must be {'> 0' if positive else '>= 0'}",
                            file=path, key=key)
    return x


def _device(table, path) -> dict:
    out = {}
    for key, value in table.items():
        kind = DEVICE_FIELDS.get(key)
        where = f"device.{key}"
        if kind is None:
            raise ScenarioError(f"unknown field{did_you_mean(key, DEVICE_FIELDS)}; "
                                f"{one_of(DEVICE_FIELDS)}", file=path, key=where)
        if kind in (str, dict):
            if not isinstance(value, kind):
                raise ScenarioError(f"= {value!r}: must be a {kind.__name__}", file=path, key=where)
            out[key] = value
        elif key == "peak_flops":
            flops = _table(value, path, where)
            out[key] = {}
            for dtype, v in flops.items():
                if dtype not in DTYPES:
                    raise ScenarioError(f"unknown dtype{did_you_mean(dtype, DTYPES)}; "
                                        f"{one_of(DTYPES)}", file=path, key=f"{where}.{dtype}")
                out[key][dtype] = _number(v, path, f"{where}.{dtype}", "flops")
        elif kind is int:
            out[key] = int(_number(value, path, where))
        else:
            out[key] = _number(value, path, where, kind if isinstance(kind, str) else "number")
    return out


def _gemm(row, path, key) -> dict:
    row = _table(row, path, key)
    for name in _GEMM_KEYS[:5] + ("flops_per_s",):
        if name not in row:
            raise ScenarioError(f"missing '{name}'", file=path, key=key)
    out = dict(row)
    out["dtype"] = normalize_dtype(str(row["dtype"]))
    for name in ("m", "n", "k", "time_s", "flops_per_s"):
        out[name] = _number(row[name], path, f"{key}.{name}")
    if "threads" in row:
        out["threads"] = int(_number(row["threads"], path, f"{key}.threads", "int"))
    return out


def _collective(row, path, key) -> Collective:
    row = _table(row, path, key)
    for name in ("backend", "op", "ranks", "size_bytes", "time_s", "alpha_s", "bw_Bps"):
        if name not in row:
            raise ScenarioError(f"missing '{name}'", file=path, key=key)
    op = normalize_op(str(row["op"]))
    if op not in OPS:
        raise ScenarioError(f"op = {row['op']!r}{did_you_mean(op, OPS)}; {one_of(OPS)}",
                            file=path, key=f"{key}.op")
    sizes, times = row["size_bytes"], row["time_s"]
    if not isinstance(sizes, list) or not isinstance(times, list) or len(sizes) != len(times) \
            or not sizes:
        raise ScenarioError("size_bytes and time_s must be lists of the same, non-zero length",
                            file=path, key=key)
    s = [_number(v, path, f"{key}.size_bytes[{i}]") for i, v in enumerate(sizes)]
    t = [_number(v, path, f"{key}.time_s[{i}]") for i, v in enumerate(times)]
    if any(b <= a for a, b in zip(s, s[1:])):
        raise ScenarioError(f"size_bytes must increase, got {sizes}", file=path, key=f"{key}.size_bytes")
    segments = tuple(_table(seg, path, f"{key}.segment[{i}]")
                     for i, seg in enumerate(row.get("segment", [])))
    extra = {k: v for k, v in row.items()
             if k not in ("backend", "op", "ranks", "size_bytes", "time_s", "alpha_s", "bw_Bps", "segment")}
    return Collective(backend=str(row["backend"]), op=op, ranks=int(_number(row["ranks"], path, f"{key}.ranks")),
                      size_bytes=tuple(s), time_s=tuple(t),
                      alpha_s=_number(row["alpha_s"], path, f"{key}.alpha_s", positive=False),
                      bw_Bps=_number(row["bw_Bps"], path, f"{key}.bw_Bps"),
                      segments=segments, extra=extra)
