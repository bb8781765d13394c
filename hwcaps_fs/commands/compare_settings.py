"""``compare``'s settings, apart from the command so that the command line can show their
defaults without importing it (``mount``, on the boot path, needs none of it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """How long and how carefully to measure. ``budget``: seconds of measuring after which no
    new round starts (once ``min_rounds`` are done); ``max_rounds`` ends it regardless;
    ``tolerance``: speed-ups within ``1 ± tolerance`` count as no difference; ``confidence``
    of the intervals; ``timeout`` per run (None: none)."""

    budget: float = 60.0
    min_rounds: int = 5
    max_rounds: int = 1000
    tolerance: float = 0.02
    confidence: float = 0.95
    timeout: float | None = 300.0
    seed: int = 0
