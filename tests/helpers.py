"""What tests share besides fixtures: data paths and three ways to run the ``mnistlab`` command.

- ``run_cli`` runs ``mnistlab.cli.main(argv)`` in this process (no interpreter start, no torch import) and
  puts back what a command may change in a process: environment, working directory, signal handlers,
  torch's thread count, random generators, matplotlib and logging state, warning filters.
- ``run_cli_forked`` runs it in a child forked from a server that has already imported torch and mnistlab:
  a real process (it can die by SIGKILL, catch SIGINT, start from fresh global state) that pays no start-up.
- ``run_cli_process`` runs ``python -m mnistlab`` in a brand-new interpreter, for what only that proves
  (a real Ctrl-C from outside, a stdout read while the process runs, the import cost itself).

All three return a ``subprocess.CompletedProcess`` (``returncode`` is ``-N`` for death by signal N).
"""

from __future__ import annotations

import contextlib
import http.server
import io
import logging
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
EMBEDDED = ROOT / "mnistlab" / "datasets" / "data" / "mnist"
FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


def find_dataset(name: str) -> Path | None:
    """``../shared/datasets/<name>``, the real files; else what ships (MNIST) or Debian installs; else None."""
    folder = SHARED / name
    if folder.is_dir():
        return folder
    fallback = {"mnist": EMBEDDED, "fashion-mnist": FASHION_SYSTEM}[name]
    return fallback if fallback.is_dir() else None


def shared_dataset(name: str) -> Path:
    """``find_dataset(name)``, or skip the calling test when the files are not on this machine."""
    folder = find_dataset(name)
    if folder is None:
        pytest.skip(f"no {name} files here")
    return folder


# -- in this process -------------------------------------------------------------------------------


@contextlib.contextmanager
def process_state(env: dict[str, str] | None = None, cwd: Path | str | None = None) -> Iterator[None]:
    """Apply ``env`` and ``cwd`` for a command run in this process; afterwards put back all it may change."""
    import numpy as np
    import torch

    from mnistlab import faults

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    rng = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    root = logging.getLogger()
    log_state = root.level, root.handlers[:]
    mpl = sys.modules.get("matplotlib")
    rc = dict(mpl.rcParams) if mpl else None
    faults.reset()  # a new process would count fault events from zero
    try:
        os.environ.update(env or {})
        if cwd is not None:
            os.chdir(cwd)
        with warnings.catch_warnings():
            yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for s, handler in saved_signals.items():
            signal.signal(s, handler)
        torch.set_num_threads(threads)
        torch.random.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        root.setLevel(log_state[0])
        root.handlers[:] = log_state[1]
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
        if rc is not None and mpl is not None:
            changed = {k: v for k, v in rc.items() if k != "backend" and mpl.rcParams[k] != v}
            mpl.rcParams.update(changed)
        faults.reset()


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """``mnistlab ARGS`` through ``mnistlab.cli.main`` in this process; ``input`` is its stdin.

    ``timeout`` is accepted for the same signature as ``run_cli_process`` and not enforced here.
    """
    from mnistlab.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    with process_state(env, cwd):
        sys.stdin = io.StringIO(input or "")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as e:  # argparse: --help, --version, a usage error
                    if isinstance(e.code, str):
                        print(e.code, file=sys.stderr)
                    code = 1 if isinstance(e.code, str) else int(e.code or 0)
                except Exception:  # what a real process would print before dying with code 1
                    traceback.print_exc()
                    code = 1
        finally:
            sys.stdin = saved_stdin
    return subprocess.CompletedProcess(["mnistlab", *args], code, out.getvalue(), err.getvalue())


# -- a real process, forked from a server that has imported torch already ---------------------------

_PRELOAD = [
    "torch",
    "numpy",
    "mnistlab.cli",
    "mnistlab.runs",
    "mnistlab.engine",
    "mnistlab.checkpoint",
    "tests.helpers",
]


def _forked_main(argv: list[str], env: dict[str, str], cwd: str, files: tuple[str, str, str]) -> None:
    # Runs in the forked child: become the process ``python -m mnistlab ARGV`` would have been.
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, (path, flags) in enumerate(zip(files, (os.O_RDONLY, os.O_WRONLY, os.O_WRONLY), strict=True)):
        new = os.open(path, flags)
        os.dup2(new, fd)
        os.close(new)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - the process's own stdin
    from mnistlab.cli import main

    sys.exit(main(argv))


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``env`` on top, and this checkout first on ``PYTHONPATH``."""
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
    return full


def _forkserver() -> multiprocessing.context.ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)  # imported once, in the server; each child is a fork of it
    return ctx


def run_cli_forked(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 600,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """``mnistlab ARGS`` in a real child process forked from a preloaded server (no torch import to pay)."""
    with tempfile.TemporaryDirectory(prefix="mnistlab-cli-") as tmp:
        files = tuple(str(Path(tmp, n)) for n in ("stdin", "stdout", "stderr"))
        Path(files[0]).write_text(input or "", encoding="utf-8")
        for f in files[1:]:
            Path(f).touch()
        full_env = child_env(env)
        proc = _forkserver().Process(
            target=_forked_main, args=(list(args), full_env, str(cwd or os.getcwd()), files), daemon=True
        )
        proc.start()
        proc.join(timeout)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(["mnistlab", *args], timeout)
        out, err = (Path(f).read_text(encoding="utf-8") for f in files[1:])
        return subprocess.CompletedProcess(["mnistlab", *args], proc.exitcode, out, err)


# -- a brand-new interpreter -----------------------------------------------------------------------


def run_cli_process(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 600,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -m mnistlab ARGS`` in a new interpreter (``input`` is fed to its stdin)."""
    full_env = child_env(env)
    return subprocess.run(
        [sys.executable, "-m", "mnistlab", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        input=input,
    )


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler], **attrs: object) -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 for the duration of the block (``attrs`` set on the server), its URL.

    Leaving the block waits for every request still being answered, so none outlives the test that made
    it; a client that hung up (a download that timed out, gave up or was cut short on purpose) is not an
    error here. Both matter beyond tidiness: a request thread that printed its traceback while the next
    test ran would make CPython 3.11 build ASTs in two threads at once (the traceback's carets parse
    source), and that can fail the other thread's ``ast.parse`` with "AST constructor recursion depth
    mismatch" (cpython gh-106905), as it once failed tests/test_layers.py.
    """

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = False  # so that server_close() joins the request threads

        def handle_error(self, request: object, client_address: object) -> None:
            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                super().handle_error(request, client_address)  # type: ignore[arg-type]

    srv = Server(("127.0.0.1", 0), handler)
    for name, value in attrs.items():
        setattr(srv, name, value)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(run: Path, log: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """``mnistlab serve RUN OPTIONS`` in a real process, the way a user starts it, on a free port; yields
    (base URL, process, log) once /healthz answers, and stops the server afterwards."""
    import time

    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mnistlab", "serve", str(run), "--port", str(port), *options],
                                stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start:\n{log.read_text()}")
        time.sleep(0.3)
    try:
        yield base, proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
