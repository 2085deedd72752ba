"""Small helpers shared by the benchmarks: repeat, take medians, print aligned tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def median_time(fn: Callable[[], Any], repeat: int = 5) -> float:
    return statistics.median(timed(fn)[0] for _ in range(repeat))


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine_header() -> str:
    """The CPU model, its vector and bf16 units as torch reports them, cores, threads and the load: every
    benchmark's figures depend on these, so each run prints them first."""
    import os
    import platform

    import torch

    from mnistlab.devices import cpu_bf16_units

    model = platform.processor() or "unknown CPU"
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", "unknown CPU", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    have = [f for f in wanted if f in flags] or ["(flags unknown)"]
    load = os.getloadavg()
    return (
        f"CPU: {model}; flags: {' '.join(have)}; torch capability {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16 units: {', '.join(cpu_bf16_units()) or 'none'}\n"
        f"cores usable: {len(os.sched_getaffinity(0))}, torch threads {torch.get_num_threads()}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; torch {torch.__version__}"
    )


def reached(value: float, goal: float) -> bool:
    """``value >= goal`` for accuracies kept in float32: 0.997 stored as float32 reads 0.99699998 (one image of
    10,000 is 1e-4, far above the tolerance)."""
    return value >= goal - 1e-6
