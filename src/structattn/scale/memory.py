"""Give freed heap memory back to the operating system during long batch loops.

Predicting or explaining tens of thousands of points allocates and frees the same few
megabyte-sized tensors batch after batch. glibc's allocator raises its mmap threshold after
the first large frees and then serves those tensors from the heap, which fragments: the
resident memory of a 65k-point prediction grew by about 160 MB although no more than one
batch was alive (measured: 799 -> 960 MB over 128 batches of 512). Calling ``malloc_trim(0)``
every few batches returns the free pages and keeps it flat (782 MB) at no measurable cost
(70.1 s against 70.8 s). On other C libraries (macOS, musl, Windows) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

TRIM_EVERY = 8  # batches between trims in the batch loops


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory() -> None:
    """Return the allocator's free pages to the OS (glibc ``malloc_trim(0)``; elsewhere nothing)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def every(k: int) -> None:
    """Call in a batch loop with the batch number `k`: trims every `TRIM_EVERY` batches."""
    if k % TRIM_EVERY == TRIM_EVERY - 1:
        release_freed_memory()
