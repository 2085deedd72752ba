"""Fault injection for the crash tests: ``MNISTLAB_FAULT=KIND:N`` delivers a real signal at a precise point.

Kinds: ``step:N`` (SIGKILL after global step N), ``epoch:N`` (SIGKILL right after epoch N is saved),
``save:N`` (SIGKILL half-way through writing the N-th checkpoint file), ``sigint-step:N`` (SIGINT after
step N), ``error-step:N`` (a ``MnistlabError`` raised after step N). Timing a ``kill -9`` from outside
cannot hit "during a save" reliably; this can, and the process still dies by the real signal, with no
chance to clean up. ``MNISTLAB_FAULT_RANK=R`` limits the fault to rank R of a multi-process run
(torchrun's ``RANK``), so one rank fails while the others carry on.
"""

from __future__ import annotations

import os
import signal

from mnistlab.errors import MnistlabError

_spec = os.environ.get("MNISTLAB_FAULT", "")
_kind, _, _n = _spec.partition(":")
_target = int(_n) if _n.isdigit() else -1
_rank = os.environ.get("MNISTLAB_FAULT_RANK", "")
_counts: dict[str, int] = {}


def hit(kind: str, value: int | None = None) -> bool:
    """True when the configured fault is ``kind`` and this is its N-th event (or ``value`` equals N)."""
    if not _spec or not _kind.endswith(kind):
        return False
    if _rank and _rank != os.environ.get("RANK", "0"):  # read now: a launched worker gets RANK after import
        return False
    if value is None:
        _counts[kind] = value = _counts.get(kind, 0) + 1
    return value == _target


def fire() -> None:
    if _kind.startswith("error"):
        raise MnistlabError(f"fault injected by MNISTLAB_FAULT={_spec}")
    os.kill(os.getpid(), signal.SIGINT if _kind.startswith("sigint") else signal.SIGKILL)
