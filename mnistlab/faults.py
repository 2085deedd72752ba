"""Fault injection for the crash tests: ``MNISTLAB_FAULT=KIND:N`` delivers a real signal at a precise point.

Kinds: ``step:N`` (SIGKILL after global step N), ``epoch:N`` (SIGKILL right after epoch N is saved),
``save:N`` (SIGKILL half-way through writing the N-th checkpoint file), ``sigint-step:N`` (SIGINT after
step N), ``sigterm-step:N`` (SIGTERM after step N), ``error-step:N`` (a ``MnistlabError`` raised after step N), ``bug-step:N`` (a ``RuntimeError``: a bug). Timing a ``kill -9`` from outside
cannot hit "during a save" reliably; this can, and the process still dies by the real signal, with no
chance to clean up. ``MNISTLAB_FAULT_RANK=R`` limits the fault to rank R of a multi-process run
(torchrun's ``RANK``), so one rank fails while the others carry on.

The variables are read when a fault point asks, not at import, so a test can set them in its own
process (``error-step`` needs no new interpreter). Unset, a fault point costs one dictionary lookup.

>>> import os
>>> os.environ["MNISTLAB_FAULT"] = "error-step:3"
>>> [hit("step", n) for n in (2, 3)]
[False, True]
>>> del os.environ["MNISTLAB_FAULT"]
>>> hit("step", 3)
False
"""

from __future__ import annotations

import os
import signal

from mnistlab.errors import MnistlabError

ENV = "MNISTLAB_FAULT"
_counts: dict[tuple[str, str], int] = {}  # (spec, kind) -> events seen in this process


def hit(kind: str, value: int | None = None) -> bool:
    """True when the configured fault is ``kind`` and this is its N-th event (or ``value`` equals N)."""
    spec = os.environ.get(ENV)
    if not spec:  # the hot path: asked after every step; one lookup, microseconds against a step's milliseconds
        return False
    fault, _, n = spec.partition(":")
    if not fault.endswith(kind):
        return False
    rank = os.environ.get("MNISTLAB_FAULT_RANK", "")
    if rank and rank != os.environ.get("RANK", "0"):
        return False
    if value is None:
        _counts[spec, kind] = value = _counts.get((spec, kind), 0) + 1
    return n.isdigit() and value == int(n)


def fire() -> None:
    """Deliver the configured fault: raise ``MnistlabError``, or send this process SIGINT or SIGKILL."""
    spec = os.environ.get(ENV, "")
    if spec.startswith("error"):
        raise MnistlabError(f"fault injected by {ENV}={spec}")
    if spec.startswith("bug"):  # not a user mistake: what the CLI must report as a bug
        raise RuntimeError(f"fault injected by {ENV}={spec}")
    sig = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}.get(spec.partition("-")[0], signal.SIGKILL)
    os.kill(os.getpid(), sig)


def reset() -> None:
    """Forget the events counted so far, as a new process would (for running commands in one process)."""
    _counts.clear()
