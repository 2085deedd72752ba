"""The web app under load: requests/s, p50/p99 latency and errors with 8 concurrent clients on loopback.

Starts ``mnistlab serve`` as a real subprocess (as a user would) and lets 8 clients, each with its own
keep-alive connection, post what the page sends (a 280×280 canvas drawing as a PNG data URL in JSON) for
``MNISTLAB_BENCH_SECONDS`` seconds (default 20), ``REPEATS`` times; prints the median of the runs. The
clients run in ``CLIENT_PROCESSES`` processes of their own on the standard library's ``http.client``
(a tenth of httpx's CPU a request): with httpx threads in the benchmark's process, the load generator
itself was the limit (its GIL, one core). The baseline, measured in the same run, is the same work without HTTP: 8 threads calling
``Predictor.predict_one`` in-process (decode, prepare, predict), so the ratio is what serving costs.
Clients and server share the machine's cores, as they would on a laptop. The server of the code before
issue 19 (commit ``BASELINE``, unpacked from git) is measured in the same run, serving the same fast MLP
trained by that code (it cannot read today's checkpoints).

Model: the fast preset trained here in seconds, or ``MNISTLAB_BENCH_RUN=RUN`` (e.g. a CNN run).

``--clients N --seconds S`` is the load mode: one run of N clients for S seconds against the server alone
(no baseline), reporting requests/s, p50/p99 and errors, and the server's peak RSS; it exits 1 on any error.

    python -m benchmarks.bench_serve
    python -m benchmarks.bench_serve --clients 16 --seconds 15
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.bench_predict import BASELINE, ROOT, baseline_tree

CLIENTS = 8
CLIENT_PROCESSES = 2
REPEATS = 3


def _picture() -> bytes:
    from mnistlab.photolike import draw_digit

    buf = io.BytesIO()
    draw_digit(5, size=280, width=18).convert("RGBA").save(buf, format="PNG")  # what canvas.toDataURL gives
    return buf.getvalue()


def _start(run: Path, code: Path = ROOT) -> tuple[subprocess.Popen, str]:
    """``mnistlab serve RUN`` as a subprocess, with the package from ``code`` (this checkout, or the tree
    of the code before issue 19)."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "mnistlab", "serve", str(run), "--port", str(port), "--quiet"]
    # cwd: ``python -m`` puts the working folder first on sys.path, before PYTHONPATH (from this checkout,
    # the "before" server would import today's package).
    proc = subprocess.Popen(cmd, env=env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")


def _load(fn, seconds: float, clients: int = CLIENTS) -> tuple[int, list[float], int]:
    """Run ``fn`` in ``clients`` threads for ``seconds``: (requests done, latencies in s, errors)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        state = fn.open() if hasattr(fn, "open") else None
        mine, bad = [], 0
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                ok = fn(state)
            except Exception:
                ok = False
            mine.append(time.perf_counter() - t)
            bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return len(latencies), latencies, errors[0]


class _Poster:
    """A ``_load`` client posting ``body`` to the server on a keep-alive connection of its own (``open``);
    a failed request closes the connection and the next one opens a new one."""

    def __init__(self, base: str, body: bytes) -> None:
        from urllib.parse import urlsplit

        self.where, self.body = urlsplit(base), body
        self.headers = {"content-type": "application/json", "content-length": str(len(body))}

    def _connect(self):  # http.client is imported in the client process only
        import http.client

        return http.client.HTTPConnection(self.where.hostname, self.where.port, timeout=30)

    def open(self) -> list:
        return [self._connect()]

    def __call__(self, conn: list) -> bool:
        import json

        try:
            conn[0].request("POST", "/api/predict", self.body, self.headers)
            r = conn[0].getresponse()
            return r.status == 200 and json.loads(r.read())["class"] == "5"
        except Exception:
            conn[0].close()
            conn[0] = self._connect()
            raise


def _post_loop(base: str, body: bytes, seconds: float, threads: int) -> tuple[list[float], int]:
    """One client process: ``threads`` keep-alive connections posting ``body`` for ``seconds``."""
    _, latencies, errors = _load(_Poster(base, body), seconds, threads)
    return latencies, errors


def _http_load(base: str, body: bytes, seconds: float, clients: int = CLIENTS) -> tuple[int, list[float], int]:
    """``clients`` keep-alive connections from ``CLIENT_PROCESSES`` processes: (requests, latencies, errors)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    procs = max(1, min(CLIENT_PROCESSES, clients))
    share = [clients // procs + (i < clients % procs) for i in range(procs)]
    with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in pool.map(int, range(procs)):  # start them before the clock starts
            pass
        parts = [pool.submit(_post_loop, base, body, seconds, n) for n in share]
        results = [p.result() for p in parts]
    latencies = [v for lat, _ in results for v in lat]
    return len(latencies), latencies, sum(bad for _, bad in results)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_mode(clients: int, seconds: float) -> int:
    """One load run of ``clients`` keep-alive clients for ``seconds`` against a real server; 1 on any error."""
    from mnistlab.config import from_preset
    from mnistlab.runs import train_run

    body = ('{"image": "data:image/png;base64,' + base64.b64encode(_picture()).decode() + '"}').encode()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(os.environ.get("MNISTLAB_BENCH_RUN") or Path(tmp) / "mlp")
        if not os.environ.get("MNISTLAB_BENCH_RUN"):
            train_run(from_preset("fast"), run, verbose=0)
        proc, base = _start(run)
        try:
            n, lat, bad = _http_load(base, body, seconds, clients)
            peak = _peak_rss_mb(proc.pid)
            alive = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    print(
        f"{clients} clients × {seconds:g} s on loopback, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  requests        {n} ({n / seconds:.1f}/s)")
    print(f"  latency p50     {_pct(lat, 0.5) * 1e3:.1f} ms")
    print(f"  latency p99     {_pct(lat, 0.99) * 1e3:.1f} ms")
    print(f"  errors          {bad}; server alive after: {alive}; server peak RSS {peak:.0f} MB")
    return 0 if bad == 0 and alive else 1


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks`` calls this with no arguments (the comparison); the command line may ask for the load mode."""
    parser = argparse.ArgumentParser(description="the web app under load")
    parser.add_argument("--clients", type=int, help="load mode: this many clients, one run (default: off)")
    parser.add_argument("--seconds", type=float, default=15.0, help="load mode: seconds (default: 15)")
    args = parser.parse_args(argv or [])
    if args.clients:
        raise SystemExit(load_mode(args.clients, args.seconds))
    import torch

    from mnistlab.config import from_preset
    from mnistlab.predict import Predictor
    from mnistlab.runs import train_run

    seconds = float(os.environ.get("MNISTLAB_BENCH_SECONDS", "20"))
    picture = _picture()
    body = ('{"image": "data:image/png;base64,' + base64.b64encode(picture).decode() + '"}').encode()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(os.environ.get("MNISTLAB_BENCH_RUN") or Path(tmp) / "mlp")
        if not os.environ.get("MNISTLAB_BENCH_RUN"):
            train_run(from_preset("fast"), run, verbose=0)

        # Baseline: the same work in-process, one torch thread per call as the server uses.
        torch.set_num_threads(1)
        predictor = Predictor(run)
        model = f"{predictor.loaded.spec['name']} from {run}" if os.environ.get("MNISTLAB_BENCH_RUN") else "fast MLP"
        base_rps = []
        for _ in range(REPEATS):
            n, _, _ = _load(lambda _s: predictor.predict_one(picture).name == "5", min(seconds, 5))
            base_rps.append(n / min(seconds, 5))

        results = {"now": _serve(run, ROOT, body, seconds)}
        tree = baseline_tree(Path(tmp) / "baseline")
        old_run = _train_with(tree, Path(tmp) / "mlp-before") if tree is not None else None
        if old_run is not None:
            results["before"] = _serve(old_run, tree, body, seconds)
    base_med = statistics.median(base_rps)
    print(f"\n{CLIENTS} clients × {seconds:.0f} s on loopback, median of {REPEATS} runs, model: {model}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; 'before' is commit {BASELINE}")
    print(f"{'':<16}" + "".join(f"{k:>12}" for k in results))
    for i, label in enumerate(("requests/s", "latency p50 ms", "latency p99 ms")):
        print(f"  {label:<14}" + "".join(f"{r[i]:>12.1f}" for r in results.values()))
    print(f"  {'errors':<14}" + "".join(f"{f'{r[3]}/{r[4]}':>12}" for r in results.values()))
    if "before" in results:
        print(f"  requests/s now / before: {results['now'][0] / results['before'][0]:.1f}x")
    print(
        f"  in-process, no HTTP (baseline): {base_med:.1f} calls/s → serving keeps {results['now'][0] / base_med:.2f}x of it"
    )


def _train_with(code: Path, out: Path) -> Path | None:
    """The fast preset trained by the package in ``code`` (a real ``mnistlab train``), or None if it fails."""
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "mnistlab", "train", "--preset", "fast", "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, env=env, cwd=code, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        print(f"(the code before could not train its model, so its server is not measured: {done.stderr[-300:]})")
        return None
    return out


def _serve(run: Path, code: Path, body: bytes, seconds: float) -> tuple[float, float, float, int, int]:
    """Median requests/s, p50 and p99 latency (ms) over ``REPEATS`` loads, errors and requests in all."""
    proc, base = _start(run, code)
    try:
        rows = []
        for i in range(REPEATS):
            n, lat, bad = _http_load(base, body, seconds)
            rows.append((n / seconds, _pct(lat, 0.5) * 1e3, _pct(lat, 0.99) * 1e3, bad, n))
            print(f"{'now' if code == ROOT else 'before'} run {i + 1}: {rows[-1][0]:.1f} req/s, p50 {rows[-1][1]:.1f} ms, "
                  f"p99 {rows[-1][2]:.1f} ms, {bad} errors of {n}", flush=True)  # fmt: skip
        if proc.poll() is not None:
            raise RuntimeError("the server died under load")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows),
            statistics.median(r[2] for r in rows), sum(r[3] for r in rows), sum(r[4] for r in rows))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
