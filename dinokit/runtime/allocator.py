"""Keep freed memory for reuse instead of handing it back to the OS (glibc only).

A DINO forward allocates and frees tensors of tens of MB hundreds of times. With glibc's defaults
each one comes back as fresh pages whose first touch is a page fault: measured ~10% of an r50
inference at 800x1216 on this project's 2-core machine. No torch import here: the CLI calls this
before any command runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc mallopt parameters
_allocator_tuned = False


def tune_allocator() -> bool:
    """Ask glibc to keep up to 1 GiB of freed memory and to serve blocks up to 32 MB (its maximum
    for this knob) from the heap. Returns whether it applied (Linux with glibc only)."""
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    ok = all(mallopt(k, v) == 1 for k, v in (
        (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20), (_M_MMAP_THRESHOLD, 32 << 20)))
    _allocator_tuned = ok
    return ok
