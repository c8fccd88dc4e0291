"""Freed memory goes back to the system during the update (glibc on Linux; elsewhere nothing changes).

PyTorch's CPU tensors come from the C allocator. glibc serves blocks below its mmap threshold (which
rises to 32 MiB as a process frees large blocks) from its heap and keeps what is freed there, so the
activations of an update, freed layer by layer in the backward pass, leave the process holding several
GiB it no longer uses and the next phase stacks its own on top: on the GSM8K-shaped step of
`benchmarks/vs_trl.py` a step started at 5.8 GiB resident and peaked at 8.5 GiB. Inside
`freed_memory_returned()` every block of 128 KiB or more is its own mapping, unmapped when freed, so the
resident memory follows the live tensors (the same step: 5.2 GiB with the heap trimmed on entry; the
update ~4 % slower, its mapped blocks faulted in afresh). Generation keeps the heap: its many per-token
blocks of a few MiB would each be mapped and faulted in again (decode measured 2x slower that way), so on
exit the threshold is set back to glibc's largest dynamic value and the heap trimmed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Iterator

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MAPPED_FROM = 128 * 1024  # bytes: blocks from here up are mapped
HEAP_UP_TO = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where its dynamic threshold ends


@functools.cache
def _glibc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None  # not glibc (musl, macOS): nothing to tune
    return libc


def set_mmap_threshold(nbytes: int) -> bool:
    """glibc's M_MMAP_THRESHOLD (fixed from now on); False where there is no glibc or it refused."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)) == 1)


@contextlib.contextmanager
def freed_memory_returned(enabled: bool = True) -> Iterator[bool]:
    """Map every block of 128 KiB or more while inside (yields whether that took effect); on exit, blocks
    up to 32 MiB come from the heap again. The heap's free pages are given back on entry and on exit (a
    block already free on the heap is still reused before anything is mapped: glibc maps only what its
    heap cannot serve)."""
    active = enabled and set_mmap_threshold(MAPPED_FROM)
    if active:
        _glibc().malloc_trim(0)  # what generation freed leaves the resident set (its blocks stay reusable)
    try:
        yield active
    finally:
        if active:
            set_mmap_threshold(HEAP_UP_TO)
            _glibc().malloc_trim(0)
