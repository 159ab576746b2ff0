"""Devices and calibrated overrides: the figures every cost formula reads.

A :class:`Device` holds one accelerator's figures in SI units (FLOP/s, bytes,
bytes/s, seconds) and, for every figure, where it comes from (``sources``).
Formulas in :mod:`parsim.cost` read these fields and never hold a hardware
number themselves. A calibrated profile's ``[device]`` table replaces fields
through :meth:`Device.with_overrides`.

Fields
------
peak_flops
    dtype -> dense (no 2:4 sparsity) FLOP/s, for "fp32", "tf32", "fp16",
    "bf16", "fp8". A missing dtype means the device has no such math.
    16-bit and fp8 figures are tensor-core peaks; "fp32" is the CUDA-core peak.
gemm_eff
    Fraction of the dtype's peak that the vendor BLAS reaches on large,
    well-shaped GEMMs (the best shape of a sweep: no tile or wave waste).
    :func:`parsim.cost.compute.gemm_time_s` multiplies it by the tile and wave
    quantization of the actual shape. ``gemm_eff_by_dtype`` replaces it for
    dtypes measured separately (fp8 reaches a lower fraction than bf16).
mem_eff
    Fraction of ``mem_bw_Bps`` a streaming kernel reaches.
attn_eff
    Fraction of the 16-bit peak a fused flash-attention kernel reaches, or
    ``None`` where no such kernel exists for the device (V100, CPU): attention is
    then charged as unfused GEMMs plus softmax traffic.
attn_kernels
    The same fraction per named kernel generation ("fa2", "fa3"), for a scenario
    whose software stack is known (``training.attention_kernel``); ``attn_eff`` is
    what "auto" takes.
sustained_frac
    Fraction of the microbenchmark tensor-core rate (``gemm_eff``, ``attn_eff``) that
    the device sustains inside a training step: GEMMs run back to back for minutes with
    communication kernels and HBM traffic alongside, under the board power limit, so the
    SM clock settles below the one a short isolated GEMM loop sees. Memory-bound kernels
    are not affected (the power cap lowers the SM clock, not the memory clock).
    :mod:`parsim.parallel.workload` applies it to the tensor-core ops of a training
    step; :mod:`parsim.cost.compute` prices isolated kernels and does not.
launch_s
    Fixed per-kernel cost added to every op (launch and ramp-up/tail).
nvlink_Bps
    NVLink bandwidth per GPU per direction (0 where there is none); the
    topology owns links, this is the device's own port figure.
kind
    "gpu" or "cpu". A CPU has no waves of thread blocks: the GEMM model drops
    quantization for it (and for any device with ``sm_count == 0``).

The presets (:mod:`parsim.device_presets`) cite every figure. Memory capacities: vendors
print HBM capacity as "80GB"; DRAM capacity is binary, so the presets store 80 GiB
(nvidia-smi shows 81920 MiB on an A100 80GB).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .errors import ScenarioError, did_you_mean, one_of
from .units import UnitError, parse_bandwidth, parse_bytes, parse_flops, parse_time

DTYPES = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8")  # fp64: calibrated CPU profiles
KINDS = ("gpu", "cpu")

TFLOPS = 1e12
GB_s = 1e9
GiB = 2.0**30
US = 1e-6

@dataclass(frozen=True)
class Device:
    """One accelerator (or CPU) in SI units; see the module docstring for fields.

    Treat the dict fields as read-only (the dataclass is frozen, its dicts are
    copies). ``sources`` maps a field name to the citation of its value.

    >>> d = get_device("a100-80gb")
    >>> d.peak_flops["bf16"], d.sm_count, d.mem_bytes / 2**30
    (312000000000000.0, 108, 80.0)
    >>> d.supports("fp8")
    False
    """

    name: str
    peak_flops: dict
    mem_bytes: float
    mem_bw_Bps: float
    sm_count: int
    gemm_eff: float
    mem_eff: float
    launch_s: float
    nvlink_Bps: float = 0.0
    attn_eff: float | None = None
    attn_kernels: dict = field(default_factory=dict)
    gemm_eff_by_dtype: dict = field(default_factory=dict)
    sustained_frac: float = 1.0
    kind: str = "gpu"
    sources: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("peak_flops", "gemm_eff_by_dtype", "attn_kernels", "sources"):
            object.__setattr__(self, name, dict(getattr(self, name)))
        problem = _problem(vars(self))
        assert problem is None, f"device {self.name}: {problem}"

    def __hash__(self):
        # Equal devices have equal figures, so hashing a few of them is consistent with ==.
        return hash((self.name, tuple(sorted(self.peak_flops.items())), self.mem_bw_Bps,
                     self.gemm_eff, self.mem_eff, self.launch_s))

    def supports(self, dtype: str) -> bool:
        """True if the device has math for ``dtype``."""
        return dtype in self.peak_flops

    def check_dtype(self, dtype: str, *, file=None, key=None) -> None:
        """Raise :class:`ScenarioError` unless ``dtype`` runs on this device.

        >>> get_device("v100-32gb").check_dtype("bf16", key="training.precision")
        Traceback (most recent call last):
        ...
        parsim.errors.ScenarioError: training.precision: v100-32gb has no bf16 math; one of: fp32, fp16
        """
        if dtype not in self.peak_flops:
            raise ScenarioError(f"{self.name} has no {dtype} math; {one_of(self.peak_flops)}",
                                file=file, key=key)

    def with_attention_kernel(self, kernel: str, *, file=None) -> "Device":
        """This device with ``attn_eff`` of the named flash-attention ``kernel``
        ("auto" keeps it); a kernel the device does not run raises :class:`ScenarioError`.

        >>> get_device("h100-sxm-80gb").with_attention_kernel("fa2").attn_eff
        0.35
        >>> get_device("a100-80gb").with_attention_kernel("fa3")
        Traceback (most recent call last):
        ...
        parsim.errors.ScenarioError: training.attention_kernel: 'fa3' does not run on a100-80gb; one of: auto, fa2
        """
        if kernel == "auto":
            return self
        if kernel not in self.attn_kernels:
            raise ScenarioError(f"{kernel!r} does not run on {self.name}; "
                                f"{one_of(['auto', *self.attn_kernels])}",
                                file=file, key="training.attention_kernel")
        return replace(self, attn_eff=self.attn_kernels[kernel])

    def gemm_eff_for(self, dtype: str) -> float:
        """GEMM efficiency ceiling for ``dtype`` (``gemm_eff_by_dtype`` or ``gemm_eff``)."""
        return self.gemm_eff_by_dtype.get(dtype, self.gemm_eff)

    def with_overrides(self, mapping, *, file=None) -> "Device":
        """A copy with fields replaced, e.g. from a calibrated profile's ``[device]`` table.

        Values are SI numbers or unit strings ("2039 GB/s", "80 GiB", "3 us",
        "312 TFLOPS"). ``peak_flops`` and ``gemm_eff_by_dtype`` are merged per
        dtype, so a profile may measure only bf16. Each replaced field's source
        becomes the profile; a ``sources`` table adds citations; ``base`` ("gpu" or
        "cpu", what ``parsim calibrate`` measured) must match the device's ``kind``.
        Unknown fields or bad values raise :class:`ScenarioError` naming
        ``device.<field>``.

        A replaced peak is a measured rate, relative to which the profile's
        ``gemm_eff`` holds: the preset's ``gemm_eff_by_dtype`` entry for that dtype
        is dropped (unless the profile gives one), and ``attn_eff`` is rescaled so
        the attention FLOP rate, which calibration does not measure, stays the
        preset's (unless the profile gives ``attn_eff``).

        >>> d = get_device("a100-80gb").with_overrides(
        ...     {"mem_bw_Bps": "1.9 TB/s", "peak_flops": {"bf16": "300 TFLOPS"}}, file="p.toml")
        >>> d.mem_bw_Bps, d.peak_flops["bf16"], d.peak_flops["fp16"], d.sources["mem_bw_Bps"]
        (1900000000000.0, 300000000000000.0, 312000000000000.0, 'profile p.toml')
        >>> get_device("a100-80gb").with_overrides({"gemm_ef": 0.8})
        Traceback (most recent call last):
        ...
        parsim.errors.ScenarioError: device.gemm_ef: unknown device field; did you mean 'gemm_eff'? one of: ...
        """
        values, sources = dict(vars(self)), dict(self.sources)
        mapping = dict(mapping)
        _check_base(self, mapping.pop("base", None), file)
        cited = _parse_sources(mapping.pop("sources", {}), file)
        for fname, raw in mapping.items():
            key = f"device.{fname}"
            if fname not in _PARSERS:
                hint = did_you_mean(fname, _PARSERS)
                raise ScenarioError(f"unknown device field{hint}{' ' if hint else '; '}{one_of(_PARSERS)}",
                                    file=file, key=key)
            try:
                values[fname] = _PARSERS[fname](raw, values[fname], file, key)
            except UnitError as err:
                raise ScenarioError(err.detail, file=file, key=key) from err
            problem = _problem(values)
            if problem:
                raise ScenarioError(f"{raw!r}: {problem}", file=file, key=key)
            sources[fname] = f"profile {file}" if file else "override"
        _rebase_efficiencies(self, values, mapping)
        values["sources"] = {**sources, **cited}
        return Device(**values)


def _check_base(dev, base, file):
    if base is None:
        return
    if base not in KINDS:
        raise ScenarioError(f"{base!r} must be {' or '.join(KINDS)}", file=file, key="device.base")
    if base != dev.kind:
        raise ScenarioError(f"the profile measured a {base} but {dev.name} is a {dev.kind}; calibrate "
                            f"on the scenario's hardware or use a matching preset (cluster.gpu)",
                            file=file, key="device.base")


def _parse_sources(raw, file):
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ScenarioError(f"{raw!r} must be a table of field = citation", file=file, key="device.sources")
    return raw


def _rebase_efficiencies(dev, values, mapping):
    """Keep per-dtype efficiencies and the attention rate consistent with measured peaks."""
    measured = set(mapping.get("peak_flops", {}))
    given = set(mapping.get("gemm_eff_by_dtype", {}))
    values["gemm_eff_by_dtype"] = {d: e for d, e in values["gemm_eff_by_dtype"].items()
                                   if d not in measured or d in given}
    attn_dtype = "bf16" if "bf16" in dev.peak_flops else "fp16"
    if attn_dtype not in measured:
        return
    scale = dev.peak_flops[attn_dtype] / values["peak_flops"][attn_dtype]
    if "attn_eff" not in mapping and dev.attn_eff is not None:
        values["attn_eff"] = min(1.0, dev.attn_eff * scale)
    given_kernels = set(mapping.get("attn_kernels", {}))
    values["attn_kernels"] = {k: (e if k in given_kernels else min(1.0, e * scale))
                              for k, e in values["attn_kernels"].items()}


def _problem(v: dict):
    """The first broken invariant of a device's field values, as a sentence, or None."""
    for dtype, flops in v["peak_flops"].items():
        if dtype not in DTYPES:
            return f"unknown dtype {dtype!r}; {one_of(DTYPES)}"
        if not (flops > 0 and math.isfinite(flops)):
            return f"peak_flops[{dtype}] must be a positive FLOP rate"
    for dtype, eff in v["gemm_eff_by_dtype"].items():
        if dtype not in DTYPES or not 0 < eff <= 1:
            return f"gemm_eff_by_dtype[{dtype}] must be an efficiency in (0, 1]"
    for name in ("gemm_eff", "mem_eff", "sustained_frac"):
        if not 0 < v[name] <= 1:
            return f"{name} must be an efficiency in (0, 1]"
    if v["attn_eff"] is not None and not 0 < v["attn_eff"] <= 1:
        return "attn_eff must be an efficiency in (0, 1], or absent (no flash-attention kernel)"
    for kernel, eff in v["attn_kernels"].items():
        if not 0 < eff <= 1:
            return f"attn_kernels[{kernel}] must be an efficiency in (0, 1]"
    if not (v["mem_bw_Bps"] > 0 and v["mem_bytes"] > 0):
        return "mem_bw_Bps and mem_bytes must be positive"
    if v["kind"] not in KINDS:
        return f"kind must be one of {KINDS}"
    if v["launch_s"] < 0 or v["nvlink_Bps"] < 0 or v["sm_count"] < 0:
        return "launch_s, nvlink_Bps and sm_count must be non-negative"
    return None


def _number(raw, _old, file, key):
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ScenarioError(f"{raw!r} must be a number", file=file, key=key)
    return float(raw)


def _count(raw, _old, file, key):
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ScenarioError(f"{raw!r} must be a non-negative integer", file=file, key=key)
    return raw


def _optional_number(raw, old, file, key):
    return None if raw is None else _number(raw, old, file, key)


def _per_dtype(parse_one):
    def parse(raw, old, file, key):
        if not isinstance(raw, dict):
            raise ScenarioError(f"{raw!r} must be a table of dtype = value; dtypes {one_of(DTYPES)}",
                                file=file, key=key)
        merged = dict(old)
        for dtype, value in raw.items():
            if dtype not in DTYPES:
                raise ScenarioError(f"unknown dtype{did_you_mean(dtype, DTYPES)}; {one_of(DTYPES)}",
                                    file=file, key=f"{key}.{dtype}")
            merged[dtype] = parse_one(value, None, file, f"{key}.{dtype}")
        return merged
    return parse


def _attn_kernels(raw, old, file, key):
    if not isinstance(raw, dict):
        raise ScenarioError(f"{raw!r} must be a table of kernel = efficiency, e.g. fa2 = 0.35",
                            file=file, key=key)
    return {**old, **{k: _number(v, None, file, f"{key}.{k}") for k, v in raw.items()}}


def _unit(parser):
    return lambda raw, _old, _file, _key: parser(raw)


def _name(raw, _old, file, key):
    if not isinstance(raw, str) or not raw:
        raise ScenarioError(f"{raw!r} must be a non-empty string", file=file, key=key)
    return raw


_PARSERS = {
    "name": _name,
    "peak_flops": _per_dtype(_unit(parse_flops)),
    "mem_bytes": _unit(parse_bytes),
    "mem_bw_Bps": _unit(parse_bandwidth),
    "sm_count": _count,
    "gemm_eff": _number,
    "gemm_eff_by_dtype": _per_dtype(_number),
    "sustained_frac": _number,
    "mem_eff": _number,
    "attn_eff": _optional_number,
    "attn_kernels": _attn_kernels,
    "launch_s": _unit(parse_time),
    "nvlink_Bps": _unit(parse_bandwidth),
}


def __getattr__(name):
    # ``hardware.DEVICES``: the presets live in device_presets, which builds them from Device
    if name == "DEVICES":
        from .device_presets import DEVICES
        return DEVICES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_device(name: str, *, file=None, key="cluster.gpu") -> Device:
    """The preset named ``name`` (case-insensitive).

    >>> get_device("H100-SXM-80GB").peak_flops["fp8"]
    1979000000000000.0
    >>> get_device("a100-80g", file="s.toml")
    Traceback (most recent call last):
    ...
    parsim.errors.ScenarioError: s.toml: cluster.gpu: unknown device 'a100-80g'; did you mean 'a100-80gb'? one of: ...
    """
    from .device_presets import DEVICES
    if not isinstance(name, str):
        raise ScenarioError(f"{name!r} must be a device name; {one_of(DEVICES)}", file=file, key=key)
    found = DEVICES.get(name.strip().lower())
    if found is None:
        hint = did_you_mean(name.strip().lower(), DEVICES)
        raise ScenarioError(f"unknown device {name!r}{hint}{' ' if hint else '; '}{one_of(DEVICES)}",
                            file=file, key=key)
    return found
