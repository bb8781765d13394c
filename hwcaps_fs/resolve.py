"""Variant resolution: which candidate each name serves, and why the others were skipped.

INTERFACE DRAFT — types fixed, function being implemented. Pure: no I/O, no FUSE.

glibc's rule for libraries, transplanted to executables: walk the active levels from the
highest to the lowest, take the first usable candidate, else the baseline, else the name is
absent.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwcaps_fs.levels import Architecture
from hwcaps_fs.store import Candidate


@dataclass(frozen=True)
class Target:
    """What resolution needs to know about the machine and who is served.

    ``levels`` are the active level names, highest first (the search order; baseline not
    included). ``isa_bits`` are the GNU_PROPERTY_X86_ISA_1 bits the CPU really supports
    (unmasked, as glibc's ``isa_1``), or None where the ISA note does not apply.
    ``require_trusted`` is set when root may execute what is served: candidates a non-root user
    could have written are then refused.
    """

    architecture: Architecture
    levels: tuple[str, ...]
    isa_bits: int | None
    require_trusted: bool


@dataclass(frozen=True)
class Skip:
    candidate: Candidate
    reason: str


@dataclass(frozen=True)
class Resolution:
    """The outcome for one relative path: ``served`` is None when no candidate is usable."""

    relpath: str
    served: Candidate | None
    skipped: tuple[Skip, ...]
