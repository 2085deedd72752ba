"""The fast preset on an idle machine and beside one busy process, before and after choosing threads by load.

``python -m benchmarks contention``. Each measurement is a fresh ``mnistlab train --preset fast`` process
(so OpenMP starts as a user's would); the figure is the run's own training time (``result.json``). The busy
process is a pure-Python spin loop this benchmark starts and ends itself.

- *before*: every core's thread, whatever the load (``--threads`` = torch's default, what ``0`` meant
  before: torch's choice);
- *now*: ``--threads 0`` (auto): the cores other processes keep busy are left to them.

Targets (issue 16): busy ≤ 2.5x idle for *now*; *now* idle no more than 5% slower than *before* idle.
Medians of 3, the conditions interleaved so a drift of the machine hits both behaviours alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 3


def _train(threads: int, out: Path) -> tuple[float, int, float]:
    """(training seconds, threads used, test accuracy) of one fresh fast-preset process."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "mnistlab", "train", "--preset", "fast", "--out", str(out), "--force",
           "--threads", str(threads), "--quiet"]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, timeout=900)
    result = json.loads((out / "result.json").read_text())
    return result["train_time_s"], result["threads"], result["test"]["sparse_categorical_accuracy"]


class Busy:
    """One other process keeping one core busy (a Python spin loop), started and ended here."""

    def __enter__(self) -> Busy:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)  # let the scheduler see it
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def main() -> None:
    import torch

    default = torch.get_num_threads()
    modes = {"before": default, "now": 0}
    times: dict[tuple[str, str], list[float]] = {}
    used: dict[tuple[str, str], set[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        _train(0, Path(tmp) / "warm")  # the decoded-data cache, so no run pays for it
        for i in range(REPEAT):
            for cond in ("idle", "busy"):
                for mode, threads in modes.items():
                    if cond == "busy":
                        with Busy():
                            t, n, acc = _train(threads, Path(tmp) / "run")
                    else:
                        t, n, acc = _train(threads, Path(tmp) / "run")
                    times.setdefault((mode, cond), []).append(t)
                    used.setdefault((mode, cond), set()).add(n)
                    print(f"  run {i + 1} {cond:4} {mode:6}: {t:6.2f}s with {n} thread(s), test accuracy {acc:.4f}")
    print(f"\nfast preset, training seconds, median of {REPEAT} (load before: {os.getloadavg()[0]:.2f})")
    print(f"{'':8} {'idle':>8} {'busy':>8} {'busy/idle':>10}  threads idle/busy")
    med = {k: statistics.median(v) for k, v in times.items()}
    for mode in modes:
        idle, busy = med[(mode, "idle")], med[(mode, "busy")]
        threads = f"{sorted(used[(mode, 'idle')])}/{sorted(used[(mode, 'busy')])}"
        print(f"{mode:8} {idle:8.2f} {busy:8.2f} {busy / idle:9.1f}x  {threads}")
    now_busy = med[("now", "busy")] / med[("now", "idle")]
    idle_cost = med[("now", "idle")] / med[("before", "idle")] - 1
    print(f"target busy/idle ≤ 2.5x: {now_busy:.2f}x ({'met' if now_busy <= 2.5 else 'MISSED'})")
    print(f"target idle no more than 5% slower: {idle_cost:+.1%} ({'met' if idle_cost <= 0.05 else 'MISSED'})")
    print(f"busy, now vs before: {med[('before', 'busy')] / med[('now', 'busy')]:.1f}x faster")


if __name__ == "__main__":
    main()
