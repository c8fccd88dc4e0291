"""train.release_memory: inside `freed_memory_returned` the C allocator gives freed blocks back to the system."""

from __future__ import annotations

import os

import pytest
import torch

from rlvr.train import memory

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _freed_but_held(**kwargs) -> float:
    """MiB still resident after freeing 256 blocks of 1 MiB, each followed by a small block that stays alive
    (so that the heap cannot simply be trimmed from its top)."""
    with memory.freed_memory_returned(**kwargs):
        pins, blocks = [], []
        for _ in range(256):
            blocks.append(torch.ones(256 * 1024))  # 1 MiB, pages touched
            pins.append(torch.ones(1024))  # 4 KiB
        before = _rss_mib()
        del blocks
        held = _rss_mib() - (before - 256)
    del pins
    return held


@pytest.mark.skipif(memory._glibc() is None or not os.path.exists("/proc/self/statm"), reason="glibc on Linux only")
def test_freed_blocks_go_back_inside_and_stay_with_the_heap_outside():
    memory.set_mmap_threshold(memory.HEAP_UP_TO)  # the state outside the update: blocks up to 32 MiB on the heap
    # A high trim threshold keeps free() from trimming the heap's top, so that only mapping can give memory back
    # (with a fragmented heap the small pins may land in old holes and leave the big blocks at the top).
    libc = memory._glibc()
    assert libc.mallopt(M_TRIM_THRESHOLD, 2**30) == 1
    try:
        assert _freed_but_held(enabled=True) < 32  # mapped blocks are unmapped when freed
        # negative control (second: its freed blocks stay on the heap, where glibc would reuse them before mapping)
        assert _freed_but_held(enabled=False) > 128
    finally:
        libc.mallopt(M_TRIM_THRESHOLD, 2 * memory.HEAP_UP_TO)  # glibc's own pairing: twice the mmap threshold


def test_disabled_or_without_glibc_it_changes_nothing(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "set_mmap_threshold", lambda n: calls.append(n) or True)
    with memory.freed_memory_returned(enabled=False) as active:
        assert not active
    assert calls == []


def test_without_glibc_nothing_is_tuned(monkeypatch):
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert not memory.set_mmap_threshold(memory.MAPPED_FROM)
    with memory.freed_memory_returned() as active:
        assert not active
