"""The machine line every benchmark table carries: CPU model, cores and vector extensions.

Fused kernels run about twice as fast with AVX-512 as with AVX2 only (and so do PyTorch and
JAX), so a table without this line cannot be compared with another machine's.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_description() -> str:
    """CPU model, core count and the vector extensions that matter here, from /proc/cpuinfo."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    ext = ", ".join(f for f in ("avx2", "avx512f") if f in flags) or "neither avx2 nor avx512f"
    return f"{model}, {os.cpu_count()} cores, {ext}"
