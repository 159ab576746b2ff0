"""Quantities with units → SI floats (bytes, seconds, bytes/s, FLOP/s).

Units are parsed here, at the edge, and nowhere else. Decimal prefixes (k, M, G,
T, P) are powers of 1000; binary ones (Ki, Mi, Gi, Ti) are powers of 1024. Bits
appear only here: ``"400 Gb/s"`` is 400e9/8 bytes per second.

>>> parse_bytes("80 GiB")
85899345920.0
>>> parse_bytes("1 GB")
1000000000.0
>>> parse_bandwidth("400 Gb/s")
50000000000.0
>>> parse_bandwidth("300 GB/s")
300000000000.0
>>> parse_time("2 us")
2e-06
>>> parse_flops("312 TFLOPS")
312000000000000.0
>>> parse_bytes(1024)
1024.0
"""
from __future__ import annotations

import math
import re

from .errors import UnitError

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_TIME = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9,
         "min": 60.0, "h": 3600.0}
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_PATTERN = re.compile(r"^\s*" + _NUMBER + r"\s*([A-Za-zµμ/]*)\s*$")

EXAMPLES = {
    "bytes": '"80 GiB", "1.5 GB", "512 MiB" or a number of bytes',
    "bandwidth": '"300 GB/s", "400 Gb/s", "25 GiB/s" or a number of bytes/s',
    "time": '"2 us", "1.5 ms", "3 s" or a number of seconds',
    "flops": '"312 TFLOPS", "989 TFLOP/s" or a number of FLOP/s',
}


def _split(text, kind):
    if isinstance(text, bool):
        raise UnitError(f"{text!r} is not a quantity; expected {EXAMPLES[kind]}")
    if isinstance(text, (int, float)):
        return float(text), None
    if not isinstance(text, str):
        raise UnitError(f"{text!r} is not a quantity; expected {EXAMPLES[kind]}")
    m = _PATTERN.match(text)
    if not m:
        raise UnitError(f"cannot read {text!r}; expected {EXAMPLES[kind]}")
    return float(m.group(1)), m.group(2)


def _prefix_scale(prefix: str):
    if prefix in _BINARY:
        return _BINARY[prefix]
    if prefix in _DECIMAL:
        return _DECIMAL[prefix]
    return None


def _check(value: float, text, kind) -> float:
    if not math.isfinite(value) or value < 0:
        raise UnitError(f"{text!r} must be a finite, non-negative {kind}")
    return value


def parse_bytes(text) -> float:
    """Bytes from ``"80 GiB"``, ``"1 GB"``, ``"100 MB"``, ``"8 Gb"`` (bits) or a number."""
    number, unit = _split(text, "bytes")
    if unit is None or unit == "":
        return _check(number, text, "size")
    for suffix, per_unit in (("B", 1.0), ("b", 0.125), ("bytes", 1.0), ("byte", 1.0)):
        if unit.endswith(suffix):
            scale = _prefix_scale(unit[: -len(suffix)])
            if scale is not None:
                return _check(number * scale * per_unit, text, "size")
    raise UnitError(f"cannot read unit {unit!r} in {text!r}; expected {EXAMPLES['bytes']}")


def parse_bandwidth(text) -> float:
    """Bytes per second from ``"300 GB/s"``, ``"400 Gb/s"``, ``"100 Gbps"`` or a number."""
    number, unit = _split(text, "bandwidth")
    if unit is None or unit == "":
        return _check(number, text, "bandwidth")
    if unit.endswith("ps") and not unit.endswith("/s"):
        unit = unit[:-2] + "/s"  # Gbps → Gb/s, GBps → GB/s
    if unit.endswith("/s"):
        try:
            return _check(parse_bytes(f"{number} {unit[:-2]}"), text, "bandwidth")
        except UnitError:
            pass
    raise UnitError(f"cannot read unit {unit!r} in {text!r}; expected {EXAMPLES['bandwidth']}")


def parse_time(text) -> float:
    """Seconds from ``"2 us"``, ``"1.5 ms"``, ``"3 s"`` or a number of seconds."""
    number, unit = _split(text, "time")
    if unit is None or unit == "":
        return _check(number, text, "time")
    if unit in _TIME:
        return _check(number * _TIME[unit], text, "time")
    raise UnitError(f"cannot read unit {unit!r} in {text!r}; expected {EXAMPLES['time']}")


def parse_flops(text) -> float:
    """FLOP/s from ``"312 TFLOPS"``, ``"989 TFLOP/s"``, ``"1.2 PFLOPS"`` or a number."""
    number, unit = _split(text, "flops")
    if unit is None or unit == "":
        return _check(number, text, "FLOP rate")
    for suffix in ("FLOP/s", "FLOPS", "flop/s", "flops", "FLOPs"):
        if unit.endswith(suffix):
            scale = _DECIMAL.get(unit[: -len(suffix)])
            if scale is not None:
                return _check(number * scale, text, "FLOP rate")
    raise UnitError(f"cannot read unit {unit!r} in {text!r}; expected {EXAMPLES['flops']}")


PARSERS = {"bytes": parse_bytes, "bandwidth": parse_bandwidth, "time": parse_time,
           "flops": parse_flops}
