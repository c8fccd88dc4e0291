"""train.release_memory: inside `freed_memory_returned` the C allocator gives freed blocks back to the system."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rlvr.train import memory

# Measured in a fresh interpreter: in a long test session the heap holds free holes of earlier tests, and glibc serves
# a 1 MiB request from such a hole (bins come before mapping), so some "mapped" blocks would stay on the heap.
_FREED_BUT_HELD = r"""
import json, os, sys
import torch
from rlvr.train import memory

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def freed_but_held(enabled):
    # MiB still resident after freeing 256 blocks of 1 MiB, each followed by a small block that stays alive
    # (so that the heap cannot simply be trimmed from its top)
    with memory.freed_memory_returned(enabled=enabled):
        pins, blocks = [], []
        for _ in range(256):
            blocks.append(torch.ones(256 * 1024))  # 1 MiB, pages touched
            pins.append(torch.ones(1024))  # 4 KiB
        before = rss_mib()
        del blocks
        held = rss_mib() - (before - 256)
    del pins
    return held

memory.set_mmap_threshold(memory.HEAP_UP_TO)  # the state outside the update: blocks up to 32 MiB on the heap
# A high trim threshold keeps free() from trimming the heap's top, so that only mapping can give memory back.
assert memory._glibc().mallopt(-1, 2**30) == 1  # M_TRIM_THRESHOLD
# the negative control second: its freed blocks stay on the heap, where glibc would reuse them before mapping
print(json.dumps([freed_but_held(True), freed_but_held(False)]))
"""


@pytest.mark.skipif(memory._glibc() is None or not os.path.exists("/proc/self/statm"), reason="glibc on Linux only")
def test_freed_blocks_go_back_inside_and_stay_with_the_heap_outside():
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    done = subprocess.run([sys.executable, "-c", _FREED_BUT_HELD], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    inside, outside = json.loads(done.stdout.strip().splitlines()[-1])
    assert inside < 32  # mapped blocks are unmapped when freed
    assert outside > 128


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


# --- malloc with transparent huge pages: the `rlvr` command restarts itself with glibc's tunable ---------------


def test_hugepage_env_asks_for_the_tunable_only_where_it_changes_something():
    env = memory.hugepage_malloc_env({"PATH": "/bin"}, mode="madvise", glibc=(2, 36))
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    # other tunables are kept, the new one appended
    kept = memory.hugepage_malloc_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, mode="madvise", glibc=(2, 36))
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    # nothing to do: already set (also by the restarted process itself), opted out, "always"/"never", old or no glibc
    assert memory.hugepage_malloc_env(env, mode="madvise", glibc=(2, 36)) is None
    assert memory.hugepage_malloc_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, mode="madvise", glibc=(2, 36)) is None
    assert memory.hugepage_malloc_env({"RLVR_MALLOC_HUGEPAGES": "0"}, mode="madvise", glibc=(2, 36)) is None
    assert memory.hugepage_malloc_env({}, mode="always", glibc=(2, 36)) is None
    assert memory.hugepage_malloc_env({}, mode="never", glibc=(2, 36)) is None
    assert memory.hugepage_malloc_env({}, mode="madvise", glibc=(2, 34)) is None


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert memory.thp_mode(f) == "madvise"
    assert memory.thp_mode(tmp_path / "missing") is None


def test_the_command_line_restarts_itself_once_with_the_tunable(monkeypatch):
    from rlvr import cli

    calls = []

    def fake_execve(path, argv, env):
        calls.append((path, argv, env))
        raise OSError("not really")  # reexec_with_allocator then runs on in this process

    monkeypatch.setattr(memory.os, "execve", fake_execve)
    monkeypatch.setattr(memory, "thp_mode", lambda: "madvise")
    monkeypatch.setattr(memory, "_glibc_version", lambda: (2, 36))
    monkeypatch.setattr(cli.sys, "platform", "linux")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("RLVR_MALLOC_HUGEPAGES", raising=False)
    monkeypatch.setenv("RLVR_MALLOC", "glibc")  # glibc's allocator kept: only the tunable
    monkeypatch.setattr(cli.sys, "argv", ["rlvr", "--version"])
    with pytest.raises(SystemExit):  # --version exits after printing
        cli.main()
    [(path, argv, env)] = calls
    assert argv[1:] == ["-m", "rlvr", "--version"] and path == argv[0]
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    calls.clear()
    with pytest.raises(SystemExit):
        cli.main(["--version"])  # called from Python with arguments: never restarts the caller's process
    assert calls == []


# --- another allocator in front of glibc's: mimalloc where installed (RLVR_MALLOC) --------------------------------


def test_the_allocator_choice_names_the_fix_when_it_cannot_be_had(tmp_path, monkeypatch):
    lib = tmp_path / "libmimalloc.so.3"
    lib.write_bytes(b"")
    assert memory.chosen_allocator({}, mimalloc=lib) == lib  # auto: mimalloc where installed
    assert memory.chosen_allocator({"RLVR_MALLOC": "glibc"}, mimalloc=lib) is None
    monkeypatch.setattr(memory, "mimalloc_library", lambda: None)
    assert memory.chosen_allocator({}) is None  # auto without it: glibc's
    with pytest.raises(SystemExit, match="pip install cmeel-mimalloc"):
        memory.chosen_allocator({"RLVR_MALLOC": "mimalloc"})
    with pytest.raises(SystemExit, match="no such file.*libjemalloc"):
        memory.chosen_allocator({"RLVR_MALLOC": str(tmp_path / "missing.so")})
    assert memory.chosen_allocator({"RLVR_MALLOC": str(lib)}) == lib


def test_malloc_env_preloads_the_allocator_once_and_keeps_glibc_tunables_otherwise(tmp_path, monkeypatch):
    lib = tmp_path / "libmimalloc.so.3"
    lib.write_bytes(b"")
    env = memory.malloc_env({"PATH": "/bin", "LD_PRELOAD": "/opt/other.so"}, mimalloc=lib)
    assert env == {"PATH": "/bin", "LD_PRELOAD": f"{lib} /opt/other.so"}  # first, the user's own preload kept
    assert memory.malloc_env(env, mimalloc=lib) is None  # the restarted process does not restart again
    assert "GLIBC_TUNABLES" not in env  # the tunable is for glibc's malloc only
    monkeypatch.setattr(memory, "thp_mode", lambda: "madvise")
    monkeypatch.setattr(memory, "_glibc_version", lambda: (2, 36))
    glibc = memory.malloc_env({"RLVR_MALLOC": "glibc"}, mimalloc=lib)
    assert glibc == {"RLVR_MALLOC": "glibc", "GLIBC_TUNABLES": memory.HUGEPAGE_TUNABLE}


def test_under_another_allocator_the_glibc_threshold_is_not_touched(monkeypatch):
    assert memory.other_allocator() is None  # this test process: glibc's malloc
    monkeypatch.setattr(memory, "other_allocator", lambda: "mi_version")
    assert not memory.set_mmap_threshold(memory.MAPPED_FROM)
    with memory.freed_memory_returned() as active:
        assert not active


def test_a_preloaded_mimalloc_is_detected_in_the_process():

    lib = memory.mimalloc_library()
    if lib is None:
        pytest.skip("cmeel-mimalloc is not installed")
    code = "from rlvr.train.memory import other_allocator as o, set_mmap_threshold as s; print(o(), s(131072))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "LD_PRELOAD": str(lib)})
    assert out.stdout.split() == ["mi_version", "False"]


def test_the_command_line_restarts_itself_once_with_mimalloc_preloaded(tmp_path, monkeypatch):
    from rlvr import cli

    lib = tmp_path / "libmimalloc.so.3"
    lib.write_bytes(b"")
    calls = []

    def fake_execve(path, argv, env):
        calls.append(env)
        raise OSError("not really")

    monkeypatch.setattr(memory.os, "execve", fake_execve)
    monkeypatch.setattr(memory, "mimalloc_library", lambda: lib)
    monkeypatch.setattr(cli.sys, "platform", "linux")
    monkeypatch.delenv("RLVR_MALLOC", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(cli.sys, "argv", ["rlvr", "--version"])
    with pytest.raises(SystemExit):
        cli.main()
    [env] = calls
    assert env["LD_PRELOAD"] == str(lib)
