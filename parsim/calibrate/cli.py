"""``parsim calibrate``: the options and the run (the top-level CLI wires them in).

    parsim calibrate -o profiles/cpu-mybox.toml            # full run, < 10 min on 2 cores
    parsim calibrate -o /tmp/p.toml --quick                # < 1 min
    parsim calibrate -o /tmp/again.toml --compare profiles/cpu-mybox.toml   # do two runs agree?
    torchrun --nnodes 2 --nproc-per-node 8 ... -m parsim.calibrate -o cluster.toml
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import ParsimError
from .profile import LARGE_MESSAGE_BYTES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, metavar="PATH",
                        help="profile TOML to write (atomically)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer shapes, sizes and repeats (about a minute)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--ranks", type=int, default=2, metavar="N",
                        help="largest communication group (groups 2..N; default 2; "
                             "ignored under torchrun, which sets the world size)")
    parser.add_argument("--backend", choices=("auto", "gloo", "nccl", "mpi"), default="auto",
                        help="gloo/nccl through torch.distributed, or mpi4py (default: auto)")
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="least kept samples per communication point (default 15, --quick 5; "
                             "a full run adds rounds until they span 6 minutes)")
    parser.add_argument("--compare", metavar="OLD.toml",
                        help="afterwards, compare the large-message bandwidths with this "
                             "earlier profile of the same machine (under torchrun or mpiexec: "
                             "python -m parsim.calibrate.compare NEW.toml OLD.toml)")


def options_from_args(args):
    from .session import Options
    if args.ranks < 1:
        raise ParsimError(f"--ranks = {args.ranks}: must be >= 1 (2 or more to measure communication)")
    if args.repeats is not None and args.repeats < 1:
        raise ParsimError(f"--repeats = {args.repeats}: must be >= 1")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise ParsimError(f"--output {args.output}: directory {out_dir} does not exist")
    return Options(output=args.output, grid="quick" if args.quick else "full", quiet=args.quiet,
                   ranks=args.ranks, backend=args.backend, repeats=args.repeats)


def run(args) -> int:
    """Run a calibration; 0 when everything asked for was measured, 1 when communication was
    skipped or failed (the compute part is still written)."""
    from .distributed import under_launcher
    from .profile import load_profile
    opts = options_from_args(args)
    old = load_profile(args.compare, file_key="--compare") if getattr(args, "compare", None) else None
    if under_launcher():
        from .distributed import calibrate_distributed
        return calibrate_distributed(opts)
    from .session import calibrate
    profile = calibrate(opts)
    print(summary(profile, opts.output))
    if old is not None:
        from .compare import agreement, format_agreement
        print(format_agreement(agreement(load_profile(opts.output), old), opts.output, args.compare))
    # --ranks 1 leaves communication out on purpose (one GPU); anything else skipped it
    return 1 if "comm_skipped" in profile["meta"] and opts.ranks >= 2 else 0


def summary(profile: dict, path: str) -> str:
    """A few lines: peak GEMM, memory bandwidth, launch cost, alpha/bandwidth per op."""
    dev = profile["device"]
    peaks = ", ".join(f"{d} {v / 1e9:.1f} GFLOP/s" for d, v in dev["peak_flops"].items())
    lines = [f"wrote {path} ({profile['meta'].get('run_s', 0):.0f} s)",
             f"  gemm peak: {peaks}; memory {dev['mem_bw_Bps'] / 1e9:.2f} GB/s; "
             f"per-op {dev['launch_s'] * 1e6:.2f} us"]
    for row in profile["collective"]:
        lines.append(f"  {row['backend']} {row['op']:<14} n={row['ranks']}: "
                     f"alpha {row['alpha_s'] * 1e6:8.1f} us, bw {row['bw_Bps'] / 1e9:6.2f} GB/s, "
                     f"fit max rel err {row['fit_rel_err']:.0%}, "
                     f"largest {row['size_bytes'][-1] / 2**20:.0f} MiB in {row['time_s'][-1] * 1e3:.1f} ms")
    noise = profile["meta"].get("noise", {})
    if profile["collective"]:
        lines.append(f"  noise: spread (p90 - p10)/median up to {noise.get('comm_spread_max', 0):.0%}; "
                     f"messages >= {LARGE_MESSAGE_BYTES // 2**20} MiB drifted up to "
                     f"{noise.get('comm_drift_max_large', 0):.0%} between the first and second "
                     "half of the run (expect two runs to differ up to about that much)")
    if "comm_skipped" in profile["meta"]:
        lines.append(f"  communication skipped: {profile['meta']['comm_skipped']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Standalone entry (``python -m parsim.calibrate``), also what torchrun runs."""
    parser = argparse.ArgumentParser(prog="parsim calibrate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ParsimError as err:
        print(f"parsim calibrate: {err}", file=sys.stderr)
        return 2
