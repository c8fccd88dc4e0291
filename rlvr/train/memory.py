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

Mapped blocks are faulted in afresh, 4 KiB at a time: a [341, 49152] float32 logits chunk is 16k page
faults, and on the 2-core CPU an elementwise op on such a block ran at ~2-3 GB/s, bound by the faults
(the update forward + backward 25-30 % slower than with the heap; benchmarks/NOTES.md). Where the kernel
gives transparent huge pages on request (`/sys/kernel/mm/transparent_hugepage/enabled` = madvise), glibc
2.35+ asks for them when started with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`: 2 MiB pages, 512 times
fewer faults (the same update 6 % faster side by side, RSS unchanged; zeroing the fresh pages remains).
The tunable is read once at process start, so the `rlvr` command re-executes itself with it
(`hugepage_malloc_env`, `reexec_with_allocator`); `RLVR_MALLOC_HUGEPAGES=0` turns that off.

An allocator that keeps freed blocks for reuse and hands them back after a delay does better than either of
glibc's regimes: mimalloc ran the GSM8K-shaped update in 0.78x the time of the mapped regime at 1.09x its peak
(glibc's heap: 0.78x at 1.84x), and generation no slower (benchmarks/NOTES.md, "Other allocators"). Where
mimalloc is installed (PyPI's `cmeel-mimalloc`, a dependency on Linux) the `rlvr` command puts it in front of
glibc's with LD_PRELOAD in the same restart (`malloc_env`); `RLVR_MALLOC=glibc` keeps glibc's, and
`RLVR_MALLOC=/path/to/lib.so` preloads that library instead (jemalloc, tcmalloc). Under another allocator
glibc's mallopt reaches nothing, so `freed_memory_returned` then does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import platform
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MAPPED_FROM = 128 * 1024  # bytes: blocks from here up are mapped
HEAP_UP_TO = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where its dynamic threshold ends
HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"  # glibc >= 2.35: madvise(MADV_HUGEPAGE) on what malloc maps
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
OPT_OUT = "RLVR_MALLOC_HUGEPAGES"
ALLOCATOR_VAR = "RLVR_MALLOC"  # auto (default): mimalloc where installed | glibc | a path to an allocator library
# Symbols only an allocator other than glibc's exports (mimalloc, jemalloc, tcmalloc).
_OTHER_ALLOCATOR_SYMBOLS = ("mi_version", "mallctl", "tc_malloc")


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


@functools.cache
def other_allocator() -> str | None:
    """The symbol of the allocator in front of glibc's in this process (preloaded), None where glibc's serves malloc."""
    try:
        process = ctypes.CDLL(None)
    except OSError:
        return None
    return next((name for name in _OTHER_ALLOCATOR_SYMBOLS if hasattr(process, name)), None)


def set_mmap_threshold(nbytes: int) -> bool:
    """glibc's M_MMAP_THRESHOLD (fixed from now on); False where there is no glibc, another allocator serves
    malloc, or glibc refused."""
    libc = _glibc()
    if libc is None or other_allocator() is not None:
        return False
    return libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)) == 1


@contextlib.contextmanager
def freed_memory_returned(enabled: bool = True, mapped_from: int = MAPPED_FROM) -> Iterator[bool]:
    """Map every block of `mapped_from` bytes (default 128 KiB) or more while inside (yields whether that took
    effect); on exit, blocks up to 32 MiB come from the heap again. The heap's free pages are given back on
    entry and on exit (a block already free on the heap is still reused before anything is mapped: glibc
    maps only what its heap cannot serve)."""
    active = enabled and set_mmap_threshold(mapped_from)
    if active:
        _glibc().malloc_trim(0)  # what generation freed leaves the resident set (its blocks stay reusable)
    try:
        yield active
    finally:
        if active:
            set_mmap_threshold(HEAP_UP_TO)
            _glibc().malloc_trim(0)


def thp_mode(path: Path = THP_MODE_FILE) -> str | None:
    """The kernel's transparent-huge-page mode ("always", "madvise", "never"), None where unknown."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def _glibc_version() -> tuple[int, ...] | None:
    lib, version = platform.libc_ver()
    if lib != "glibc" or not version:
        return None
    try:
        return tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        return None


def hugepage_malloc_env(environ: Mapping[str, str], *, mode: str | None = None,
                        glibc: tuple[int, ...] | None = None) -> dict[str, str] | None:
    """The environment to start this program again in so that glibc's malloc asks for transparent huge
    pages; None when that would change nothing: the tunable is already set, `RLVR_MALLOC_HUGEPAGES=0`,
    no glibc >= 2.35 (musl, macOS), or a kernel mode other than madvise ("always" gives them anyway,
    "never" refuses). `mode` and `glibc` default to this machine's."""
    if environ.get(OPT_OUT, "1") == "0":
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return None
    glibc = _glibc_version() if glibc is None else glibc
    if glibc is None or glibc < (2, 35):
        return None
    if (thp_mode() if mode is None else mode) != "madvise":
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(t for t in (tunables, HUGEPAGE_TUNABLE) if t)}


def mimalloc_library() -> Path | None:
    """libmimalloc.so from PyPI's cmeel-mimalloc, where it is installed."""
    from importlib import metadata

    try:
        files = metadata.distribution("cmeel-mimalloc").files or []
    except metadata.PackageNotFoundError:
        return None
    libs = sorted(f for f in files if f.name.startswith("libmimalloc.so"))
    for f in libs:
        path = Path(f.locate())
        if path.is_file():
            return path.resolve()
    return None


def chosen_allocator(environ: Mapping[str, str], *, mimalloc: Path | None = None) -> Path | None:
    """The allocator library `RLVR_MALLOC` asks for: auto (default) mimalloc where installed, glibc (None), mimalloc
    (required), or a path. `mimalloc` defaults to `mimalloc_library()`. Names the fix when it cannot be had."""
    choice = environ.get(ALLOCATOR_VAR, "auto")
    if choice == "glibc":
        return None
    if choice in ("auto", "mimalloc"):
        lib = mimalloc if mimalloc is not None else mimalloc_library()
        if lib is None and choice == "mimalloc":
            raise SystemExit(f"{ALLOCATOR_VAR}=mimalloc but it is not installed: pip install cmeel-mimalloc "
                             f"(or {ALLOCATOR_VAR}=glibc)")
        return lib
    if not Path(choice).is_file():
        raise SystemExit(f"{ALLOCATOR_VAR}={choice}: no such file; give auto, glibc, mimalloc or the path of an "
                         "allocator library (e.g. /usr/lib/x86_64-linux-gnu/libjemalloc.so.2)")
    return Path(choice)


def malloc_env(environ: Mapping[str, str], *, mimalloc: Path | None = None) -> dict[str, str] | None:
    """The environment to start this program again in: the chosen allocator (`chosen_allocator`) put first in
    LD_PRELOAD, or, where glibc's stays, its huge-page tunable (`hugepage_malloc_env`); None when that would change
    nothing (also in the restarted process itself)."""
    lib = chosen_allocator(environ, mimalloc=mimalloc)
    if lib is None:
        return hugepage_malloc_env(environ)
    preload = environ.get("LD_PRELOAD", "")
    if str(lib) in preload.replace(":", " ").split():
        return None
    return {**environ, "LD_PRELOAD": " ".join(x for x in (str(lib), preload) if x)}


def reexec_with_allocator(argv: list[str]) -> None:
    """Replace this process by `python -m rlvr *argv` with the allocator's environment (`malloc_env`: mimalloc
    preloaded where installed, else glibc's tunable) set (same PID, so a launcher such as torchrun sees no
    difference); returns without doing anything when there is nothing to change."""
    env = malloc_env(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", "rlvr", *argv], env)
    except OSError:
        return  # could not re-execute (no executable path): run on with the default allocator
