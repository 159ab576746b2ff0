"""The device presets: V100, A100, H100, H200 and a reference CPU, each figure with its source.

Every number a preset holds is cited in its ``sources`` (datasheets, published
microbenchmarks); :mod:`parsim.hardware` explains the fields and looks presets up by name.
"""
from __future__ import annotations

from .hardware import GB_s, GiB, TFLOPS, US, Device

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
