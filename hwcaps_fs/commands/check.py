"""``hwcaps-fs check``: what a packager should fix in a store, independent of this machine's CPU.

Resolution (:mod:`hwcaps_fs.core.resolve`) quietly skips what it cannot serve; this module says so
loudly, and also flags what works here but will break elsewhere: a variant without a baseline
vanishes on older CPUs, and a binary whose ISA note asks for more than its directory's level
is skipped (or, without hwcaps-fs, fails with "CPU ISA level is lower than required") on
exactly the CPUs that directory is for. Ownership and mode are always checked, since the
store may later be served to root; they are warnings because a build root is rarely
root-owned.

Each check is a function in a table (:data:`CANDIDATE_CHECKS`), returning a finding or None.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hwcaps_fs.core.levels import Architecture
from hwcaps_fs.core.model import Candidate, Store
from hwcaps_fs.core.resolve import (
    Target,
    isa_needed_beyond,
    machine_problem,
    trust_problem,
)
from hwcaps_fs.errors import show


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One thing to fix. ``path`` is relative to ROOT (where the file is), ``""`` for what the
    scan reported about the store as a whole (its message then names the path);
    ``relpath`` the name in the view it concerns, when there is one."""

    severity: Severity
    path: str
    message: str
    relpath: str | None = None

    def __str__(self) -> str:
        where = f"{show(self.path)}: " if self.path else ""
        return f"{self.severity.value}: {where}{self.message}"


CandidateCheck = Callable[[Candidate, Architecture], tuple[Severity, str] | None]


#: What a baseline symlink's scan problem starts with when the link is broken (it dangles or
#: loops) rather than merely leaving ROOT (``awk -> /etc/alternatives/awk``).
BROKEN_LINK_PROBLEMS = ("dangling symlink", "more than")


def _scan_problem(candidate: Candidate, arch: Architecture) -> tuple[Severity, str] | None:
    """An error, except for a baseline symlink the scan did not follow: views show it as the
    same symlink, exactly what the directory holds, so only a broken one is worth a warning."""
    if candidate.problem is None:
        return None
    if candidate.level is not None or not candidate.unfollowed_link:
        return Severity.ERROR, candidate.problem
    if candidate.problem.startswith(BROKEN_LINK_PROBLEMS):
        return Severity.WARNING, f"{candidate.problem} (served as the same symlink)"
    return None


def _not_executable(candidate: Candidate, arch: Architecture) -> tuple[Severity, str] | None:
    if candidate.problem is not None or candidate.mode & 0o111:
        return None
    return Severity.ERROR, f"not executable (mode {candidate.mode & 0o7777:04o})"


def _wrong_machine(candidate: Candidate, arch: Architecture) -> tuple[Severity, str] | None:
    reason = None if candidate.elf is None else machine_problem(candidate.elf, arch)
    return None if reason is None else (Severity.ERROR, reason)


def _isa_above_directory(
    candidate: Candidate, arch: Architecture
) -> tuple[Severity, str] | None:
    if candidate.elf is None or candidate.elf.machine != arch.e_machine:
        return None
    needed = isa_needed_beyond(candidate, arch.isa_bits(candidate.level or arch.baseline.name) or 0)
    if needed is None:
        return None
    where = candidate.level or "the baseline"
    return (Severity.ERROR, f"ISA note {needed:#x} needs {arch.isa_level_name(needed)}, "
            f"more than {where}: CPUs at {where} will not run it")


def _untrusted(candidate: Candidate, arch: Architecture) -> tuple[Severity, str] | None:
    if candidate.problem is not None:
        return None
    reason = trust_problem(candidate)
    return None if reason is None else (Severity.WARNING, f"{reason} (refused when serving root)")


#: The checks run on every candidate, in reporting order.
CANDIDATE_CHECKS: tuple[CandidateCheck, ...] = (
    _scan_problem,
    _not_executable,
    _wrong_machine,
    _isa_above_directory,
    _untrusted,
)


def _missing_baseline(relpath: str, found: Mapping[str | None, Candidate]) -> Finding | None:
    if None in found:
        return None
    lowest = min(found.values(), key=lambda candidate: candidate.path)
    levels = ", ".join(sorted(str(level) for level in found))
    return Finding(Severity.ERROR, lowest.path,
                   f"no baseline for {show(relpath)} (only {levels}): "
                   "CPUs below those levels will not see it", relpath)


def check(store: Store, target: Target) -> list[Finding]:
    """Everything to fix in ``store`` for ``target.architecture``: errors first, then
    warnings, each group in path order. The CPU's own level plays no part."""
    arch = target.architecture
    # The scan's warnings already name their path and why (unknown level directories,
    # unreadable directories, a file where another tree has a directory).
    findings = [Finding(Severity.WARNING, "", warning) for warning in store.warnings]
    for relpath in sorted(store.files):
        found = store.files[relpath]
        missing = _missing_baseline(relpath, found)
        if missing is not None:
            findings.append(missing)
        for candidate in found.values():
            for run in CANDIDATE_CHECKS:
                outcome = run(candidate, arch)
                if outcome is not None:
                    findings.append(Finding(outcome[0], candidate.path, outcome[1], relpath))
    return sorted(findings, key=lambda f: (f.severity is not Severity.ERROR, f.path))
