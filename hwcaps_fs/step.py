"""One reported step of CPU level detection (kept apart so every detection module can make
them without importing :mod:`hwcaps_fs.cpu`, which imports them all)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One detection step: where it looked, what it found (one line), and the level it
    gives, if any."""

    source: str
    outcome: str
    level: str | None = None
