"""Calibration: microbenchmarks of this machine (or a torchrun cluster) → profile TOML.

``parsim calibrate -o profiles/NAME.toml`` measures GEMM throughput by shape and dtype,
memory bandwidth, the fixed per-op cost, and collective / point-to-point times over
message sizes and group sizes, fits alpha-beta curves by relative error, and writes a
profile that :func:`load_profile` reads back. See ``README_SECTION.md`` for clusters.
"""
from .profile import Collective, Profile, load_profile

__all__ = ["Collective", "Profile", "load_profile"]
