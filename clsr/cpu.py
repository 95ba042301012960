"""What this CPU can do, from /proc/cpuinfo: the instruction sets that decide encoder numerics and speed.

Three kinds of x86-64 server CPU are met in practice, and clsr's defaults differ on them:

* AVX2 only (e.g. AMD Zen 3): no native bf16, and no VNNI, so int8 dot products go through
  ``vpmaddubsw``, which adds two u8 x s8 products into a *saturating* int16;
* AVX-512 with VNNI and bf16 (e.g. AMD Zen 4, Intel Cooper Lake): ``vpdpbusd`` accumulates int8
  products in int32 without saturation, and bf16 matrix products are native;
* AMX (Intel Sapphire Rapids and later): bf16 and int8 tile instructions.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

# The flags a benchmark records (the ones that change which kernels run).
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where it cannot be read, e.g. not Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_supports_vnni() -> bool:
    """True where int8 dot products accumulate in int32 without saturating (AVX512-VNNI, AVX-VNNI or AMX)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, as a container or `taskset` limits it; else
    os.cpu_count()), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def cpu_kind() -> str:
    """A short name for the kind of CPU, as the docs' encoding tables are split: "amx", "avx512-bf16",
    "avx512", "avx2" or "other"."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512-bf16"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "other"


def reported_flags() -> list[str]:
    """The flags of :data:`REPORTED_FLAGS` this CPU has, for benchmark reports and logs."""
    return [flag for flag in REPORTED_FLAGS if flag in cpu_flags()]
