"""Event-loop lag, measured inside the bot: how long a callback waits before the loop runs it.

A small thread schedules a probe on the loop every `interval_s` (call_soon_threadsafe) and records how late it ran.
Anything that blocks the loop (a synchronous DB call, CPU work) shows up as lag, and a Discord event would wait
just as long. The thread uses the real clock, so it also works under SimCord's virtual time.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque


def percentile(values, pct: float) -> float:
    """The nearest-rank percentile (0.0 for no values)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))]


class LoopLagMonitor:
    def __init__(self, interval_s: float = 0.05, keep: int = 20_000) -> None:
        self.interval_s = interval_s
        self.samples_ms: deque[float] = deque(maxlen=keep)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(loop,), name="loop-lag", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def reset(self) -> None:
        self.samples_ms.clear()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._stop.wait(self.interval_s):
            ran = threading.Event()
            sent = time.perf_counter()

            def probe(sent: float = sent, ran: threading.Event = ran) -> None:
                self.samples_ms.append((time.perf_counter() - sent) * 1000)
                ran.set()

            try:
                loop.call_soon_threadsafe(probe)
            except RuntimeError:  # the loop is closed
                return
            # One probe at a time: a loop blocked for 2 s yields one 2000 ms sample, not forty.
            while not ran.wait(0.5):
                if self._stop.is_set() or loop.is_closed():
                    return

    def percentile(self, pct: float) -> float:
        return percentile(self.samples_ms, pct)

    def summary(self) -> dict[str, float]:
        return {
            "samples": len(self.samples_ms),
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
            "max_ms": round(max(self.samples_ms, default=0.0), 2),
        }
