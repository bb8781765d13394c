"""Variant resolution: which candidate each name serves, and why the others were skipped.

Pure: no I/O, no FUSE.

glibc's rule for libraries, transplanted to executables: walk the active levels from the
highest to the lowest, take the first usable candidate, else the baseline, else the name is
absent. "Usable" adds what glibc's path search does not check but its loader then enforces
(``ld.so.cache`` lookups already skip on the ISA note): a variant that would fail to exec is
skipped here, so the next one down runs instead of an error. Every refusal carries a one-line
reason, because ``hwcaps-fs which`` shows them to explain the choice.

The checks are a table of small functions (:data:`REFUSALS`), each returning a reason or None,
so that ``check`` (:mod:`hwcaps_fs.commands.check`) can reuse the same wording.
"""

from __future__ import annotations

import dataclasses
import functools
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hwcaps_fs.core.access import writable_by_others
from hwcaps_fs.core.elf import ElfFacts, machine_name
from hwcaps_fs.core.levels import Architecture
from hwcaps_fs.core.model import Candidate, Store


@dataclass(frozen=True)
class Target:
    """What resolution needs to know about the machine and who is served.

    ``levels`` are the active level names, highest first (the search order; baseline not
    included). ``isa_bits`` are the GNU_PROPERTY_X86_ISA_1 bits the CPU really supports
    (unmasked, as glibc's ``isa_1``), or None where the ISA note does not apply.
    ``require_trusted`` is set when root may execute what is served: candidates a non-root user
    could have written are then refused. ``supported`` are the levels the CPU supports
    (highest first), which is more than ``levels`` when ``capped_by`` lowered the level.
    """

    architecture: Architecture
    levels: tuple[str, ...]
    isa_bits: int | None
    require_trusted: bool
    supported: tuple[str, ...] = ()
    capped_by: str | None = None

    @functools.cached_property
    def inactive(self) -> tuple[str, ...]:
        """The level names not searched, highest first (worked out once, not for every name
        of the store)."""
        return tuple(level for level in reversed(self.architecture.level_names)
                     if level not in self.levels)

    def capped(self, level: str) -> Target:
        """This target as a CPU whose level is ``level`` (or lower) would be: the levels
        searched stop there (what a v2 machine is served, asked on a v4 one)."""
        rank = self.architecture.rank(level)
        levels = tuple(name for name in self.levels if self.architecture.rank(name) <= rank)
        return dataclasses.replace(self, levels=levels)


@dataclass(frozen=True, slots=True)
class Skip:
    """A candidate not served: ``reason`` says why for people, ``why`` names the kind of
    reason for tools (one of :data:`WHY`; ``which --json`` shows it)."""

    candidate: Candidate
    reason: str
    why: str


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome for one relative path: ``served`` is None when no candidate is usable."""

    relpath: str
    served: Candidate | None
    skipped: tuple[Skip, ...]


def machine_problem(elf: ElfFacts, architecture: Architecture) -> str | None:
    """Why an ELF file cannot run on ``architecture`` (wrong machine, class or byte order)."""
    if elf.machine != architecture.e_machine:
        return (f"built for {machine_name(elf.machine)} (e_machine {elf.machine}), "
                f"this is {architecture.name}")
    if elf.elf_class != architecture.elf_class:
        return (f"a {elf.elf_class}-bit ELF file, "
                f"this is {architecture.name} ({architecture.elf_class}-bit)")
    if elf.little_endian != (architecture.byteorder == "little"):
        order = "little" if elf.little_endian else "big"
        return f"a {order}-endian ELF file, this is {architecture.name}"
    return None


def isa_needed_beyond(candidate: Candidate, allowed: int | None) -> int | None:
    """The ISA note of ``candidate`` when it asks for bits outside ``allowed``, else None
    (also when there is no note, or no ``allowed`` because the note does not apply)."""
    needed = candidate.elf.isa_needed if candidate.elf is not None else None
    if needed is None or allowed is None or not needed & ~allowed:
        return None
    return needed


def trust_problem(candidate: Candidate) -> str | None:
    """Why a non-root user could have changed what ``candidate`` serves, if they could."""
    if candidate.uid != 0:
        return f"owned by uid {candidate.uid}, not root"
    if not candidate.unfollowed_link and writable_by_others(candidate.uid, candidate.mode):
        return f"writable by group or others (mode {stat.S_IMODE(candidate.mode):04o})"
    return candidate.untrusted


def _scan_problem(candidate: Candidate, target: Target) -> str | None:
    return candidate.problem


def _not_regular(candidate: Candidate, target: Target) -> str | None:
    return None if stat.S_ISREG(candidate.mode) else "not a regular file"


def _not_executable(candidate: Candidate, target: Target) -> str | None:
    if candidate.mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        return None
    return f"not executable (mode {stat.S_IMODE(candidate.mode):04o})"


def _wrong_machine(candidate: Candidate, target: Target) -> str | None:
    return None if candidate.elf is None else machine_problem(candidate.elf, target.architecture)


def _isa_too_high(candidate: Candidate, target: Target) -> str | None:
    needed = isa_needed_beyond(candidate, target.isa_bits)
    if needed is None or target.isa_bits is None:
        return None
    arch = target.architecture
    return (f"needs {arch.isa_level_name(needed)} (ISA note {needed:#x}) "
            f"but this CPU supports up to {arch.isa_level_name(target.isa_bits)}")


def _untrusted(candidate: Candidate, target: Target) -> str | None:
    return trust_problem(candidate) if target.require_trusted else None


Refusal = Callable[[Candidate, Target], str | None]

#: Why a candidate at an active level is not served, checked in this order (the first reason
#: found is the one reported), each with the name ``which --json`` gives it.
REFUSALS: tuple[tuple[str, Refusal], ...] = (
    ("unusable", _scan_problem),
    ("not_regular", _not_regular),
    ("not_executable", _not_executable),
    ("wrong_machine", _wrong_machine),
    ("isa_too_high", _isa_too_high),
    ("untrusted", _untrusted),
)


def _not_a_baseline(candidate: Candidate, target: Target) -> str | None:
    if candidate.unfollowed_link:
        return None
    return _scan_problem(candidate, target) or _not_regular(candidate, target)


#: The baseline is what the directory holds without hwcaps-fs: it is served as it is (a data
#: file, a binary of another machine, a too-high ISA note, a symlink out of ROOT all behave
#: exactly as they would without the mount, so an in-place view never hides a name), unless it
#: is not a file at all or a non-root user could have written what root would run.
BASELINE_REFUSALS: tuple[tuple[str, Refusal], ...] = (
    ("unusable", _not_a_baseline),
    ("untrusted", _untrusted),
)

#: Every name a :class:`Skip` can give (docs/json.md lists them): the refusals', and the two
#: reasons a level is not searched at all.
WHY = ("not_supported", "capped", *dict(REFUSALS + BASELINE_REFUSALS))


def refusal(candidate: Candidate, target: Target) -> tuple[str, str] | None:
    """Why ``candidate`` cannot be served on ``target`` (its level aside), as (name, reason),
    or None."""
    checks = REFUSALS if candidate.level is not None else BASELINE_REFUSALS
    for why, check in checks:
        reason = check(candidate, target)
        if reason is not None:
            return why, reason
    return None


def _inactive(candidate: Candidate, level: str, target: Target) -> Skip:
    """Why a level is not searched: the CPU lacks it, or something capped the level below."""
    highest = target.levels[0] if target.levels else "the baseline"
    if level in target.supported:
        return Skip(candidate, f"level {level} not searched: capped at {highest} by "
                               f"{target.capped_by}, though this CPU supports it", "capped")
    best = target.supported[0] if target.supported else "the baseline"
    return Skip(candidate, f"level {level} not supported by this CPU (it supports up to "
                           f"{best})", "not_supported")


def resolve(
    relpath: str, candidates: Mapping[str | None, Candidate], target: Target
) -> Resolution:
    """Which candidate ``relpath`` serves on ``target``, and why each better one was not.

    Candidates at levels the target does not search are listed first (highest first) as
    skipped, so that ``which`` can say why a v4 build was not taken on a v3 CPU; then the
    active levels are tried in ``target.levels`` order, then the baseline.
    """
    skipped = [_inactive(candidates[level], level, target)
               for level in target.inactive if level in candidates]
    for level in (*target.levels, None):
        candidate = candidates.get(level)
        if candidate is None:
            continue
        refused = refusal(candidate, target)
        if refused is None:
            return Resolution(relpath, candidate, tuple(skipped))
        why, reason = refused
        skipped.append(Skip(candidate, reason, why))
    return Resolution(relpath, None, tuple(skipped))


def resolve_store(store: Store, target: Target) -> dict[str, Resolution]:
    """The resolution of every file path of ``store`` (``served`` is None for the paths where
    nothing is usable: the view leaves them out, ``which`` explains them)."""
    return {relpath: resolve(relpath, found, target) for relpath, found in store.files.items()}
