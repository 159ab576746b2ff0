"""One GPU, one transformer training step: measured with torch, predicted by parsim.

    python -m parsim.validate.gpu_step --profile profiles/h100-....toml --out DIR
    python -m parsim.validate.gpu_step --device cpu --sizes tiny --out DIR      # a dry run

For each size (:data:`SIZES`) a GPT-style decoder (learned positions, pre-LayerNorm blocks of
fused-QKV attention and a 4h GELU MLP, tied output head; Radford et al. 2019) trains with
torch autocast bf16 and fused AdamW on random tokens: ``warmup`` steps, then the median of
``steps`` timed steps (forward, backward, optimizer; the device synchronised around each),
with the spread (p90 - p10) / median. parsim predicts the same step (analytical engine, one
device, ``dp = tp = pp = 1``) from the device preset and, with ``--profile``, from a
calibrated profile (``parsim calibrate --ranks 1`` on that GPU: GEMM rates by shape and dtype,
HBM bandwidth, fused attention, launch cost). Attention runs through
``scaled_dot_product_attention``, whose flash backend is FlashAttention-2 (PyTorch 2.2 release
notes), so the scenario says ``attention_kernel = "fa2"``.

What the comparison tests: the preset's GEMM, attention and memory figures (or the profile's)
and parsim's per-layer op list, on a single device. ``Device.sustained_frac`` (the Hopper
clock drop measured with communication beside the GEMMs) still applies to this job without
communication, so it is checked here too.

Writes DIR/gpu_step.json (``rows``: name, measured_s, predicted_s, predicted_preset_s,
error_pct, spread_pct, and the device and library versions) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext

import numpy as np

from ..atomic import write_text

VOCAB = 50304                      # GPT-2's 50257 padded to a multiple of 64 (nanoGPT)
# name -> (layers, hidden, heads, seq, micro_batch); 16 B/param of weights, gradients and
# Adam state plus activations fit an 80 GB H100 up to the 2.7B model
SIZES = {
    "tiny": (2, 128, 4, 128, 2),
    "gpt-125m": (12, 768, 12, 2048, 8),
    "gpt-350m": (24, 1024, 16, 2048, 8),
    "gpt-760m": (24, 1536, 16, 2048, 4),
    "gpt-1.3b": (24, 2048, 16, 2048, 4),
    "gpt-2.7b": (32, 2560, 20, 2048, 2),
}
GPU_SIZES = ("gpt-125m", "gpt-350m", "gpt-760m", "gpt-1.3b", "gpt-2.7b")


def build_model(torch, layers: int, hidden: int, heads: int, seq: int):
    """The decoder as a torch module (fp32 parameters; autocast runs the math in bf16)."""
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
            self.qkv, self.proj = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
            self.fc1, self.fc2 = nn.Linear(hidden, 4 * hidden), nn.Linear(4 * hidden, hidden)

        def forward(self, x):
            b, s, h = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(h, dim=2)
            q, k, v = (t.view(b, s, heads, h // heads).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, s, h))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(VOCAB, hidden), nn.Embedding(seq, hidden)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln = nn.LayerNorm(hidden)

        def forward(self, idx, targets):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
            for block in self.blocks:
                x = block(x)
            logits = self.ln(x) @ self.tok.weight.t()        # tied output head
            return F.cross_entropy(logits.view(-1, VOCAB).float(), targets.view(-1))

    return GPT()


def measure(torch, size: str, device: str, *, steps: int = 10, warmup: int = 3) -> dict:
    """Median and spread of one training step of ``size`` on ``device``."""
    layers, hidden, heads, seq, mb = SIZES[size]
    dev = torch.device(device)
    model = build_model(torch, layers, hidden, heads, seq).to(dev)
    fused = {"fused": True} if dev.type == "cuda" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **fused)
    gen = torch.Generator(device="cpu").manual_seed(0)
    idx = torch.randint(0, VOCAB, (mb, seq + 1), generator=gen).to(dev)
    x, y = idx[:, :-1].contiguous(), idx[:, 1:].contiguous()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    # bf16 autocast on the GPU; a CPU dry run stays in fp32 (CPU bf16 is emulated: slow)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    times = []
    for _ in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        with amp:
            loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - t0)
    from ..calibrate.noise import spread
    kept = np.array(times[warmup:])
    med = float(np.median(kept))
    n_params = sum(p.numel() for p in model.parameters())
    return {"measured_s": med, "spread_pct": 100.0 * spread(kept),
            "samples_s": [float(t) for t in kept], "params": int(n_params)}


def scenario(size: str, gpu: str, profile: str | None) -> dict:
    """The parsim scenario of the same step on one device."""
    layers, hidden, heads, seq, mb = SIZES[size]
    topology = "dgx-a100" if gpu.startswith("a100") else "dgx-h100"   # one GPU: no link used
    cluster = {"gpu": gpu, "topology": topology, "gpus": 1, "gpus_per_node": 1}
    if profile:
        cluster["profile"] = os.path.abspath(profile)
    return {"name": f"gpu-step-{size}",
            "model": {"kind": "transformer", "layers": layers, "hidden": hidden, "heads": heads,
                      "seq_len": seq, "vocab": VOCAB, "tied_embeddings": True,
                      "position": "learned"},
            "training": {"global_batch": mb, "micro_batch": mb, "precision": "bf16",
                         "flash_attention": True, "attention_kernel": "fa2", "recompute": "none"},
            "parallel": {"dp": 1, "tp": 1, "pp": 1},
            "cluster": cluster}


def predict_s(size: str, gpu: str, profile: str | None) -> float:
    from ..predict import predict
    from ..scenario import scenario_from_dict
    return predict(scenario_from_dict(scenario(size, gpu, profile), file=None),
                   engine="analytical").step_time_s


def gpu_preset(torch) -> str:
    """The device preset of this GPU: A100 SXM 40/80 GB, H100 SXM 80/96 GB, H200; other
    cards (PCIe and NVL parts, GH200) have no preset and stop the check with a message."""
    name = torch.cuda.get_device_name(0)
    props = torch.cuda.get_device_properties(0)
    low, mem_gib, sms = name.lower(), props.total_memory / 2**30, props.multi_processor_count
    if any(tag in low for tag in ("pcie", "nvl", "gh200", "gb200")):
        raise SystemExit(f"gpu_step: no parsim preset for {name!r} (PCIe/NVL/Grace parts differ "
                         "in clocks and memory from the SXM presets)")
    if "h200" in low and sms == 132:
        return "h200"
    if "h100" in low and sms == 132:
        return "h100-sxm-96gb" if mem_gib > 90 else "h100-sxm-80gb"
    if "a100" in low and sms == 108:
        return "a100-80gb" if mem_gib > 50 else "a100-40gb"
    raise SystemExit(f"gpu_step: no parsim preset for {name!r} ({sms} SMs, {mem_gib:.0f} GiB)")


def run(args) -> dict:
    import torch
    cuda = args.device == "cuda"
    gpu = gpu_preset(torch) if cuda else "a100-80gb"      # CPU dry run: any preset
    sizes = args.sizes.split(",") if args.sizes else list(GPU_SIZES if cuda else ("tiny",))
    rows = []
    for size in sizes:
        if size not in SIZES:
            raise SystemExit(f"gpu_step: unknown size {size!r}; one of {', '.join(SIZES)}")
        got = measure(torch, size, args.device, steps=args.steps, warmup=args.warmup)
        preset = predict_s(size, gpu, None)
        pred = predict_s(size, gpu, args.profile) if args.profile else preset
        rows.append({"name": size, **got, "predicted_s": pred, "predicted_preset_s": preset,
                     "error_pct": 100.0 * (pred - got["measured_s"]) / got["measured_s"]})
        print(f"{size:10s} measured {got['measured_s'] * 1e3:9.2f} ms (spread "
              f"{got['spread_pct']:4.1f} %)  predicted {pred * 1e3:9.2f} ms "
              f"({rows[-1]['error_pct']:+6.1f} %)  preset-only {preset * 1e3:9.2f} ms",
              flush=True)
        if cuda:
            torch.cuda.empty_cache()
    errs = [abs(r["error_pct"]) for r in rows]
    out = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "preset": gpu,
           "profile": args.profile, "torch": torch.__version__,
           "cuda": str(torch.version.cuda) if cuda else None,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "median_abs_pct_error": float(np.median(errs)), "max_abs_pct_error": float(max(errs)),
           "rows": rows}
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        write_text(os.path.join(args.out, "gpu_step.json"), json.dumps(out, indent=1))
    print(f"median |error| {out['median_abs_pct_error']:.1f} %, worst "
          f"{out['max_abs_pct_error']:.1f} % ({len(rows)} sizes)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m parsim.validate.gpu_step", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--sizes", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--profile", metavar="P.toml", help="a profile calibrated on this GPU")
    ap.add_argument("--out", metavar="DIR", help="write DIR/gpu_step.json")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    run(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
