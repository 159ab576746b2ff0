"""Device presets and calibrated overrides: the figures every cost formula reads.

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

Memory capacities: vendors print HBM capacity as "80GB"; DRAM capacity is binary,
so these presets store 80 GiB (nvidia-smi shows 81920 MiB on an A100 80GB).
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

# Citations shared by several presets (the full text lives here once).
_SRC_V100 = "NVIDIA Tesla V100 datasheet (SXM2): 15.7 TFLOPS fp32, 125 TFLOPS tensor, 900 GB/s HBM2, NVLink 300 GB/s; 80 SMs (Volta whitepaper)"
_SRC_A100 = "NVIDIA A100 datasheet (SXM4): 19.5 fp32, 156 tf32, 312 bf16/fp16 TFLOPS dense; 40GB 1555 GB/s, 80GB 2039 GB/s; NVLink 600 GB/s; 108 SMs (Ampere whitepaper)"
_SRC_H100 = "NVIDIA H100 datasheet (SXM5): 67 fp32, 989 tf32*, 1979 bf16/fp16*, 3958 fp8* TFLOPS (*with sparsity: dense is half); 3.35 TB/s HBM3; NVLink 900 GB/s; 132 SMs"
_SRC_H200 = "NVIDIA H200 datasheet (SXM): same GH100 compute as H100 SXM; 141 GB HBM3e at 4.8 TB/s; NVLink 900 GB/s"
_SRC_PEAK_README = "shared/data/README.md 'GPU peaks': V100 125, A100 312, H100/H200 989 (bf16) and 1979 (fp8) TFLOP/s"
_SRC_MAMF = ("Bekman, ml-engineering, compute/accelerator/README.md, 'Maximum Achievable Matmul FLOPS "
             "comparison table' (mamf-finder.py, mean of 100 iters)")
_SRC_A100_MEM = ("NVIDIA developer forum 'Trouble to Reach Peak Bandwidth of A100' (2025): 1.80 of 2.04 TB/s "
                 "measured on A100 80GB SXM, 88% (Nsight Compute agrees); the thread cites a GTC talk where no "
                 "kernel exceeded ~90%")
_SRC_LAUNCH = ("NVIDIA 'Getting Started with CUDA Graphs' (A. Gray, 2019): back-to-back short kernels cost a few "
               "us each beyond their work; 3 us is a round per-kernel figure (not verified against a stored copy: "
               "calibrate)")
_SRC_FA2 = "Dao 2023, FlashAttention-2 (arXiv:2307.08691): 50-73% of A100 peak; 0.62 is the middle of that range"
_SRC_FA3 = ("Shah et al. 2024, FlashAttention-3 (arXiv:2407.08608): FA2 reaches 35% of H100 peak, FA3 up to 75% "
            "(740 TFLOP/s bf16); 0.55 is the middle, for the mix of kernels deployed in 2024 stacks")
_SRC_SUSTAINED_TB = ("Mu Li, mli/transformers-benchmarks, README 'Micro-Benchmarking Summary' and "
                     "micro_bench.ipynb (torch a @ b on n x n matrices, median of runs over >= 3 s, NGC "
                     "PyTorch 22.07, CUDA 11.7: the library generation of the 2021-2023 runs)")
_SRC_HOPPER_CLOCK = ("deepseek-ai/DeepGEMM issue #120 (2025): on Hopper (H800, the H100 SXM die and 700 W "
                     "limit) overlapping computation with communication exceeds the power limit and the "
                     "SM clock drops from 1980 to 1575 MHz: 0.795. Judgement: the MAMF loop behind "
                     "gemm_eff runs GEMMs alone at the full boost clock; every training step in "
                     "published_runs overlaps NCCL traffic with GEMMs")
_SRC_NO_FLASH = "FlashAttention supports Turing/Ampere and later (Dao et al. 2022); none for Volta"


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


def _gpu(name, *, peaks, mem_bytes, mem_bw_Bps, sm_count, gemm_eff, mem_eff, nvlink_Bps,
         attn_eff, sources, gemm_eff_by_dtype=None, launch_s=3 * US, sustained_frac=1.0,
         attn_kernels=None):
    sources = {"launch_s": _SRC_LAUNCH, **sources}
    return Device(name=name, peak_flops=peaks, mem_bytes=mem_bytes, mem_bw_Bps=mem_bw_Bps,
                  sm_count=sm_count, gemm_eff=gemm_eff, mem_eff=mem_eff, launch_s=launch_s,
                  nvlink_Bps=nvlink_Bps, attn_eff=attn_eff, attn_kernels=attn_kernels or {},
                  gemm_eff_by_dtype=gemm_eff_by_dtype or {}, sustained_frac=sustained_frac,
                  sources=sources)


def _v100(name, mem_gib):
    return _gpu(
        name, peaks={"fp32": 15.7 * TFLOPS, "fp16": 125 * TFLOPS},
        mem_bytes=mem_gib * GiB, mem_bw_Bps=900 * GB_s, sm_count=80,
        # 101 TFLOP/s measured (fp16 cuBLAS, 8192^3, V100 PCIe) / 125 TFLOP/s SXM2 peak = 0.81
        gemm_eff=0.80,
        sustained_frac=0.94,  # 95 TFLOP/s sustained (>= 3 s, 8192^3) / 101 TFLOP/s short run
        mem_eff=0.83,  # 750 / 900 GB/s measured
        nvlink_Bps=150 * GB_s,  # 300 GB/s is both directions of 6 links
        attn_eff=None,
        sources={
            "peak_flops": f"{_SRC_V100}; {_SRC_PEAK_README}", "mem_bw_Bps": _SRC_V100,
            "sm_count": _SRC_V100, "nvlink_Bps": _SRC_V100 + " (total of both directions: 150 each way)",
            "mem_bytes": f"NVIDIA V100 datasheet: {mem_gib} GB HBM2",
            "gemm_eff": ("NVIDIA developer forum 'Understanding IPC and issue slot utilization when using "
                         "Tensor Cores' (2019): cuBLAS fp16 GEMM M=N=K=8192 at ~101 TFLOPS on V100 PCIe "
                         "(~90% of its 112 TFLOPS); 101/125 = 0.81 of the SXM2 peak. Markidis et al. 2018, "
                         "IPDPSW, doi:10.1109/IPDPSW.2018.00091: up to 83 TFLOPS with 2018 cuBLAS"),
            "mem_eff": ("Jia, Maggioni, Staiger, Scarpazza 2018, 'Dissecting the NVIDIA Volta GPU Architecture "
                        "via Microbenchmarking', arXiv:1804.06826: ~750 of 900 GB/s global-memory bandwidth"),
            "attn_eff": _SRC_NO_FLASH,
            "sustained_frac": (f"{_SRC_SUSTAINED_TB}: V100 16GB fp16 95 TFLOPS sustained, against the 101 "
                               "TFLOPS short-run figure behind gemm_eff: 95/101 = 0.94"),
        })


def _a100(name, mem_gib, mem_bw_Bps):
    return _gpu(
        name, peaks={"fp32": 19.5 * TFLOPS, "tf32": 156 * TFLOPS, "fp16": 312 * TFLOPS,
                     "bf16": 312 * TFLOPS},
        mem_bytes=mem_gib * GiB, mem_bw_Bps=mem_bw_Bps, sm_count=108,
        gemm_eff=0.869,  # MAMF 271.2 / 312 TFLOP/s (bf16, best shape 1024x10240x5120)
        sustained_frac=0.848,  # 230 TFLOP/s sustained (>= 3 s, fp16 8192^3) / MAMF 271.2
        mem_eff=0.88,  # 1.80 / 2.04 TB/s
        nvlink_Bps=300 * GB_s,  # 600 GB/s is both directions of 12 links
        attn_eff=0.62,
        attn_kernels={"fa2": 0.62},  # FlashAttention-3 is Hopper-only
        sources={
            "peak_flops": f"{_SRC_A100}; {_SRC_PEAK_README}", "mem_bw_Bps": _SRC_A100,
            "sm_count": _SRC_A100, "nvlink_Bps": _SRC_A100 + " (total of both directions: 300 each way)",
            "mem_bytes": f"NVIDIA A100 datasheet: {mem_gib} GB HBM2/HBM2e",
            "gemm_eff": f"{_SRC_MAMF}: A100 SXM bf16 271.2 of 312 TFLOPS = 86.9% (torch 2.6.0+cu126)",
            "mem_eff": _SRC_A100_MEM, "attn_eff": _SRC_FA2, "attn_kernels": _SRC_FA2,
            "sustained_frac": (f"{_SRC_SUSTAINED_TB}: A100 80GB fp16 8192^3 matmul 230 TFLOPS sustained "
                               "(no tile or wave loss: 4096 tiles fill 38 waves of 108 SMs to 99.8%), "
                               "against MAMF's 271.2: 230/271.2 = 0.848"),
        })


def _hopper(name, mem_gib, mem_bw_Bps, *, fp8_eff, mem_source, fp8_eff_source):
    return _gpu(
        name, peaks={"fp32": 67 * TFLOPS, "tf32": 494.5 * TFLOPS, "fp16": 989 * TFLOPS,
                     "bf16": 989 * TFLOPS, "fp8": 1979 * TFLOPS},
        mem_bytes=mem_gib * GiB, mem_bw_Bps=mem_bw_Bps, sm_count=132,
        gemm_eff=0.803,  # MAMF 794.5 / 989 TFLOP/s (bf16)
        gemm_eff_by_dtype={"fp8": fp8_eff},
        sustained_frac=0.795,  # 1575 / 1980 MHz SM clock with communication alongside GEMMs
        mem_eff=0.88,  # no Hopper HBM3 measurement found; A100's measured fraction
        nvlink_Bps=450 * GB_s,  # 900 GB/s is both directions of 18 links
        attn_eff=0.55,
        attn_kernels={"fa2": 0.35, "fa3": 0.75},
        sources={
            "peak_flops": f"{_SRC_H100}; {_SRC_PEAK_README}", "sm_count": _SRC_H100,
            "nvlink_Bps": _SRC_H100 + " (total of both directions: 450 each way)",
            "mem_bytes": mem_source, "mem_bw_Bps": mem_source,
            "gemm_eff": (f"{_SRC_MAMF}: H100 SXM bf16 794.5 of 989 TFLOPS = 80.3% (torch 2.7.0+cu126); "
                         "the table notes 'H200 is the same'"),
            "gemm_eff_by_dtype": fp8_eff_source,
            "mem_eff": "assumed equal to the A100 measurement (no H100/H200 SXM figure found): " + _SRC_A100_MEM,
            "attn_eff": _SRC_FA3, "attn_kernels": _SRC_FA3,
            "sustained_frac": _SRC_HOPPER_CLOCK,
        })


def _cpu():
    # A modest x86 server, one socket: 16 cores with AVX2, two 256-bit FMA units per core
    # (8 fp32 lanes x 2 FLOP x 2 units = 32 FLOP/cycle), 2.5 GHz all-core:
    # 16 x 2.5e9 x 32 = 1.28e12 FLOP/s. Four DDR4-3200 channels: 4 x 3200e6 x 8 B = 102.4 GB/s.
    cores, clock_hz, flop_per_cycle = 16, 2.5e9, 32
    channels, transfers_per_s, bytes_per_transfer = 4, 3200e6, 8
    return Device(
        name="cpu", peak_flops={"fp32": cores * clock_hz * flop_per_cycle},
        mem_bytes=128 * GiB, mem_bw_Bps=channels * transfers_per_s * bytes_per_transfer, sm_count=0,
        gemm_eff=0.8, mem_eff=0.75, launch_s=1 * US, nvlink_Bps=0.0, attn_eff=None, kind="cpu",
        sources={
            "peak_flops": ("generic 16-core AVX2 server at 2.5 GHz; 2 FMA units x 8 fp32 lanes x 2 FLOP per "
                           "cycle (Intel 64 and IA-32 Architectures Optimization Reference Manual, Haswell "
                           "and later); calibrate with the real host"),
            "mem_bw_Bps": "4 channels DDR4-3200 (JEDEC JESD79-4: 3200 MT/s x 64-bit bus = 25.6 GB/s each)",
            "mem_bytes": "generic server: 128 GiB",
            "sm_count": "0: a CPU has no SMs; compute.gemm_time_s uses its no-wave model",
            "gemm_eff": "assumption: vendor BLAS SGEMM on large matrices; calibrate",
            "mem_eff": "assumption: STREAM triad typically reaches 70-80% of DRAM peak (McCalpin, STREAM); calibrate",
            "launch_s": "assumption: ~1 us Python/numpy call overhead per op; calibrate",
            "attn_eff": "no flash-attention kernel on CPU",
        })


DEVICES = {d.name: d for d in (
    _v100("v100-16gb", 16),
    _v100("v100-32gb", 32),
    _a100("a100-40gb", 40, 1555 * GB_s),
    _a100("a100-80gb", 80, 2039 * GB_s),
    _hopper("h100-sxm-80gb", 80, 3350 * GB_s, fp8_eff=0.709,
            mem_source=_SRC_H100 + "; 80 GB HBM3",
            fp8_eff_source=f"{_SRC_MAMF}: H100 SXM fp8 (e4m3) 1402.6 of 1979 TFLOPS = 70.9%"),
    _hopper("h100-sxm-96gb", 96, 4000 * GB_s, fp8_eff=0.709,
            mem_source=("judgement: the 96 GB H100 enables a sixth HBM3 stack; 3.35 TB/s x 6/5 = 4.0 TB/s, "
                        "the figure NVIDIA's GH200 datasheet gives for its 96 GB HBM3 H100"),
            fp8_eff_source=f"{_SRC_MAMF}: H100 SXM fp8 (e4m3) 1402.6 of 1979 TFLOPS = 70.9%"),
    _hopper("h200", 141, 4800 * GB_s, fp8_eff=0.734,
            mem_source=_SRC_H200,
            fp8_eff_source=f"{_SRC_MAMF}: H200 SXM fp8 (e4m3) 1453.4 of 1979 TFLOPS = 73.4%"),
    _cpu(),
)}


def get_device(name: str, *, file=None, key="cluster.gpu") -> Device:
    """The preset named ``name`` (case-insensitive).

    >>> get_device("H100-SXM-80GB").peak_flops["fp8"]
    1979000000000000.0
    >>> get_device("a100-80g", file="s.toml")
    Traceback (most recent call last):
    ...
    parsim.errors.ScenarioError: s.toml: cluster.gpu: unknown device 'a100-80g'; did you mean 'a100-80gb'? one of: ...
    """
    if not isinstance(name, str):
        raise ScenarioError(f"{name!r} must be a device name; {one_of(DEVICES)}", file=file, key=key)
    found = DEVICES.get(name.strip().lower())
    if found is None:
        hint = did_you_mean(name.strip().lower(), DEVICES)
        raise ScenarioError(f"unknown device {name!r}{hint}{' ' if hint else '; '}{one_of(DEVICES)}",
                            file=file, key=key)
    return found
