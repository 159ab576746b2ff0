"""Atomic file writes: a temp file beside the target, then ``os.replace``, so a reader (or
a crash) sees the old file or the new one, never half of one. Every file parsim writes
for a user — profiles, reports, plots, traces, result JSON — goes through here."""
from __future__ import annotations

import os
import tempfile


def write_via(path, write) -> None:
    """Let ``write(tmp_path)`` fill a temp file in ``path``'s folder, then move it into
    place (readable by all, 0644, like a plain ``open``); the temp file never outlives
    a failure."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-",
                               suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, flushed to disk first.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "a.txt")
    >>> write_text(p, "x"); open(p).read(), sorted(os.listdir(d))
    ('x', ['a.txt'])
    """
    def fill(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    write_via(path, fill)
