"""A Keras-style progress line: ``1875/1875 ━━━━━━━━━━━━━━━━━━━━ 2s 1ms/step - loss: 0.2961``.

On a TTY the line is redrawn in place (at most every ``interval`` seconds); otherwise only the final
line is printed, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TextIO


def format_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    if seconds >= 1:
        return f"{seconds:.0f}s"
    return f"{seconds * 1000:.0f}ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f}us"  # Keras: "57us/step"


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progbar:
    """Progress over ``target`` units (steps, bytes, images).

    >>> bar = Progbar(3, enabled=False)
    >>> for i in range(3):
    ...     bar.update(i + 1, {"loss": 0.5})
    """

    def __init__(
        self,
        target: int | None,
        *,
        width: int = 20,
        unit: str = "step",
        stream: TextIO | None = None,
        enabled: bool = True,
        interval: float = 0.1,
        byte_units: bool = False,
    ) -> None:
        self.target = target
        self.width = width
        self.unit = unit
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = enabled
        self.interval = interval
        self.byte_units = byte_units
        self.dynamic = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._drawn_len = 0
        self._finished = False

    def update(self, current: int, values: Mapping[str, float] | None = None, *, finalize: bool = False) -> None:
        if not self.enabled or self._finished:
            return
        done = finalize or (self.target is not None and current >= self.target)
        now = time.perf_counter()
        if not done and (not self.dynamic or now - self._last_draw < self.interval):
            return
        self._last_draw = now
        line = self._line(current, values or {}, now - self.start, done)
        if self.dynamic:
            pad = " " * max(0, self._drawn_len - len(line))
            self.stream.write("\r" + line + pad)
            self._drawn_len = len(line)
        elif done:
            self.stream.write(line)
        if done:
            self.stream.write("\n")
            self._finished = True
        self.stream.flush()

    def _line(self, current: int, values: Mapping[str, float], elapsed: float, done: bool) -> str:
        count = format_bytes(current) if self.byte_units else str(current)
        parts = []
        if self.target:
            total = format_bytes(self.target) if self.byte_units else str(self.target)
            filled = min(self.width, int(self.width * current / self.target))
            bar = "━" * filled + ("━" if done else "╸" if filled < self.width else "") + " " * 0
            bar = (bar + "\x20" * self.width)[: self.width]
            parts.append(f"{count}/{total} {bar}")
        else:
            parts.append(count)
        if done:
            parts.append(format_duration(elapsed))
            if self.byte_units:
                parts.append(f"{format_bytes(current / max(elapsed, 1e-9))}/s")
            elif current:
                parts.append(f"{format_duration(elapsed / current)}/{self.unit}")
        elif self.target and current:
            parts.append(f"ETA {format_duration(elapsed / current * (self.target - current))}")
        line = " ".join(parts)
        if values:
            line += " - " + " - ".join(f"{k}: {v:.4f}" for k, v in values.items())
        return line
