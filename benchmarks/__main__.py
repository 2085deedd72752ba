"""Run the benchmarks: ``python -m benchmarks`` runs all quick ones; ``python -m benchmarks train data`` a few.

Heavy ones (the CNN ``best`` preset on MNIST and Fashion-MNIST; ``record``, the accuracy ceiling; ``predict``, which
trains a CNN) run only when named: ``python -m benchmarks best`` (``make bench-best``), ``make bench-record``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path

HEAVY = {"best", "predict", "record"}  # each trains a CNN: minutes, run them by name


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    found = sorted(
        m.name.removeprefix("bench_") for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_")
    )
    wanted = argv or [n for n in found if n not in HEAVY]
    unknown = [n for n in wanted if n not in found]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)} (have: {', '.join(found)})", file=sys.stderr)
        return 2
    import torch

    from benchmarks.common import machine_header

    threads = torch.get_num_threads()
    print(machine_header(), flush=True)
    for name in wanted:
        print(f"\n=== {name} ===", flush=True)
        t = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.bench_{name}").main()
        finally:  # a benchmark that changes torch's threads must not change the next one's
            torch.set_num_threads(threads)
        print(f"--- {name}: {time.perf_counter() - t:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
