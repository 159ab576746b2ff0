"""Do two calibrations of the same machine agree?

    parsim calibrate -o NEW.toml --compare OLD.toml      # calibrate, then compare
    python -m parsim.calibrate.compare NEW.toml OLD.toml # two files made before (torchrun, MPI)

Large messages are where a profile's bandwidth lives, so the check compares, per backend,
operation and group size, the algorithm bandwidth S / t of every message of 16 MiB or more
that both files measured (:meth:`parsim.calibrate.profile.Profile.bandwidth_ratios`); that
is the verdict. The bandwidth of the alpha-beta fit of the largest messages (the last
segment) is shown beside it: where a curve bends (gloo's reduce-scatter slows past 16 MiB)
the segment rests on two or three points and moves more than the points do. A ratio is the
new file's bandwidth over the old one's. On a shared machine the two can differ by the
drift each run reports (``meta.noise.comm_drift_max_large``); quiet the machine and rerun
when they differ by more.
"""
from __future__ import annotations

import argparse
import math
import sys

from ..errors import ParsimError
from .profile import LARGE_MESSAGE_BYTES, Profile, load_profile


def agreement(new: Profile, old: Profile) -> dict:
    """``points``: {(backend, op, ranks, size): new algbw / old algbw} at >= 16 MiB;
    ``fits``: {(backend, op, ranks): new fitted large-message bandwidth / old};
    ``worst``: the largest |ratio - 1| over ``points``, ``worst_fit`` over ``fits`` (nan
    when nothing is shared)."""
    points = new.bandwidth_ratios(old)
    theirs = {(c.backend, c.op, c.ranks): c for c in old.collectives}
    fits = {}
    for c in new.collectives:
        o = theirs.get((c.backend, c.op, c.ranks))
        if o is not None:
            fits[(c.backend, c.op, c.ranks)] = _large_bw(c) / _large_bw(o)
    def worst(ratios):
        return max((abs(r - 1.0) for r in ratios), default=math.nan)
    return {"points": points, "fits": fits, "worst": worst(points.values()),
            "worst_fit": worst(fits.values())}


def _large_bw(c) -> float:
    """Bandwidth of the fit segment that covers the largest messages (the whole-curve fit
    when there are no segments)."""
    return (c.segments[-1]["bw_Bps"] if c.segments else c.bw_Bps)


def format_agreement(result: dict, new_path: str, old_path: str) -> str:
    """A few lines: per operation the fitted bandwidth and the per-message ratios."""
    if not result["points"] and not result["fits"]:
        return f"  compare: {new_path} and {old_path} share no communication measurements"
    lines = [f"  compare with {old_path} (bandwidth here / there, messages >= "
             f"{LARGE_MESSAGE_BYTES / 2**20:.0f} MiB):"]
    for key, fit in sorted(result["fits"].items()):
        backend, op, ranks = key
        pts = sorted((s, r) for (b, o, n, s), r in result["points"].items()
                     if (b, o, n) == key)
        per = ", ".join(f"{s / 2**20:.0f} MiB {r:.2f}" for s, r in pts)
        lines.append(f"    {backend} {op:<14} n={ranks}: fit {fit:.2f}" + (f"; {per}" if per else ""))
    lines.append(f"  largest difference {result['worst']:.0%} (fitted bandwidths: "
                 f"{result['worst_fit']:.0%})")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m parsim.calibrate.compare",
                                 description="large-message bandwidths of two profiles")
    ap.add_argument("new", metavar="NEW.toml")
    ap.add_argument("old", metavar="OLD.toml")
    args = ap.parse_args(argv)
    try:
        new, old = load_profile(args.new, file_key="NEW.toml"), load_profile(args.old, file_key="OLD.toml")
    except ParsimError as err:
        print(f"parsim: error: {err}", file=sys.stderr)
        return 2
    print(format_agreement(agreement(new, old), args.new, args.old))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
