"""A small TOML 1.0 writer (the standard library reads TOML but cannot write it).

Covers what profiles need: tables, arrays of tables (nested too), inline arrays,
inline tables inside arrays, strings, integers, floats (``inf``/``nan`` included),
booleans and dates/times. ``None`` has no TOML form and raises ``TypeError`` naming the key.
Output is read back unchanged by :mod:`tomllib` (a round-trip test pins it).

>>> print(dumps({"meta": {"host": "vm", "repeats": 3}, "row": [{"x": 1.5}, {"x": 2e-06}]}), end="")
[meta]
host = "vm"
repeats = 3
<BLANKLINE>
[[row]]
x = 1.5
<BLANKLINE>
[[row]]
x = 2e-06
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import re

from ..atomic import write_text

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def dumps(data: dict) -> str:
    """Return ``data`` (a dict with string keys) as a TOML document."""
    if not isinstance(data, dict):
        raise TypeError(f"a TOML document is a table (dict), not {type(data).__name__}")
    lines: list[str] = []
    _write_table(lines, (), data)
    return "\n".join(lines).lstrip("\n") + "\n"


def write_atomic(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as TOML to ``path`` atomically (:func:`parsim.atomic.write_text`)."""
    write_text(path, dumps(data))


def _is_table_array(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _write_table(lines: list[str], path: tuple, table: dict) -> None:
    """Plain keys first, then sub-tables, then arrays of tables (TOML needs that order)."""
    plain = [(k, v) for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)]
    subs = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    arrays = [(k, v) for k, v in table.items() if _is_table_array(v)]
    for key, value in plain:
        lines.append(f"{_key(key)} = {_value(value, path + (key,))}")
    for key, value in subs:
        sub_path = path + (key,)
        has_plain = any(not isinstance(v, dict) and not _is_table_array(v) for v in value.values())
        if has_plain or not value:
            lines += ["", f"[{_dotted(sub_path)}]"]
        _write_table(lines, sub_path, value)
    for key, rows in arrays:
        sub_path = path + (key,)
        for row in rows:
            lines += ["", f"[[{_dotted(sub_path)}]]"]
            _write_table(lines, sub_path, row)


def _dotted(path: tuple) -> str:
    return ".".join(_key(k) for k in path)


def _key(key) -> str:
    if not isinstance(key, str):
        raise TypeError(f"TOML keys are strings, not {key!r}")
    return key if _BARE_KEY.match(key) else _string(key)


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value, path: tuple) -> str:
    if value is None:
        raise TypeError(f"{_dotted(path)}: TOML has no null; leave the key out instead")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(float(value))   # shortest exact form, always with . or e (numpy's too)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v, path) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_key(k)} = {_value(v, path + (k,))}" for k, v in value.items())
        return "{" + items + "}" if items else "{}"
    if hasattr(value, "item") and callable(value.item):      # numpy scalars
        return _value(value.item(), path)
    raise TypeError(f"{_dotted(path)}: cannot write {type(value).__name__} {value!r} as TOML")
