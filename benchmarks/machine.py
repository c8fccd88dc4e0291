"""What the benchmarks read of the machine: the CPU flags their figures are recorded with, and /proc status fields."""

from __future__ import annotations

from pathlib import Path


def cpu_flags() -> str:
    """The flags that decide float32 / bfloat16 matrix speed on this CPU ("no avx2" when none of them)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return " ".join(f for f in wanted if f in flags) or "no avx2"


def status_kb(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now; VmHWM: its peak, reset by `clear_refs`)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (this benchmark needs Linux)")
