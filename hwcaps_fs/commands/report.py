"""What the inspection commands print: the same facts as text for people and as JSON for tools.

Each function builds a :class:`Report` from core results and does no I/O; :func:`emit` prints it.
Keeping both renderings side by side makes it hard for them to drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hwcaps_fs.commands.check import Finding, Severity
from hwcaps_fs.core.loader_links import is_loader_link
from hwcaps_fs.core.model import Candidate, Store
from hwcaps_fs.core.resolve import Resolution
from hwcaps_fs.detect.cpu import Detection
from hwcaps_fs.errors import show


@dataclass
class Report:
    text: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def emit(report: Report, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.data, indent=2, sort_keys=True))
    else:
        # Each line once more through show(): a name that reached a line unquoted cannot
        # break it or reach the terminal as control characters.
        print("\n".join(map(show, report.text)))


#: The version of the JSON outputs' fields: raised when a field changes meaning or goes away
#: (adding one does not). The fields are documented in docs/json.md.
SCHEMA = 1


@dataclass(frozen=True)
class LevelState:
    """Where one level stands on this machine."""

    supported: bool
    searched: bool
    decided_by: str

    def phrase(self) -> str:
        if self.supported and self.searched:
            return "supported, searched"
        if self.supported:
            return f"supported, not searched (capped by {self.decided_by})"
        if self.searched:
            return f"NOT supported, searched (forced by {self.decided_by})"
        return "not supported"

    def data(self) -> dict[str, Any]:
        return {"supported": self.supported, "searched": self.searched,
                "capped_by": self.decided_by if self.supported and not self.searched else None,
                "forced_by": self.decided_by if self.searched and not self.supported else None,
                "state": self.phrase()}


def _level_state(detection: Detection, name: str) -> LevelState:
    arch = detection.architecture
    rank = arch.rank(name)
    return LevelState(supported=rank <= arch.rank(detection.hardware_level),
                      searched=rank <= arch.rank(detection.level),
                      decided_by=detection.decided_by)


def levels(detection: Detection) -> Report:
    """Like ``ld.so --help``: every level of this architecture, supported or not."""
    arch = detection.architecture
    names = list(reversed(arch.level_names))
    states = {name: _level_state(detection, name) for name in names}
    higher = [name for name in arch.level_names if arch.rank(name) > arch.rank(detection.level)]
    next_level = higher[0] if higher else None
    missing = list(detection.missing.get(next_level, ())) if next_level else []

    uarch = detection.microarchitecture
    text = [f"Architecture: {arch.name}" + (f" (archspec: {uarch})" if uarch else "")]
    if names:
        text.append("Levels, highest priority first:")
        text += [f"  {name:<12} {states[name].phrase()}" for name in names]
    else:
        text.append("This architecture has no glibc-hwcaps levels: only the baseline is served.")
    text.append(f"Level in effect: {detection.level} (decided by {detection.decided_by})")
    if next_level:
        text.append(f"Next level {next_level}: "
                    + (f"missing {', '.join(missing)}" if missing else "missing features unknown"))
    text.append("Detection steps:")
    text += [f"  {step.source}: {step.outcome}" for step in detection.steps]
    text += [f"warning: {warning}" for warning in detection.warnings]

    data = {
        "schema": SCHEMA,
        "architecture": arch.name,
        "microarchitecture": detection.microarchitecture,
        "levels": [{"name": name, **states[name].data()} for name in names],
        "hardware_level": detection.hardware_level,
        "level": detection.level,
        "decided_by": detection.decided_by,
        "next_level": next_level,
        "missing_for_next_level": missing,
        "missing": {name: list(features) for name, features in detection.missing.items()},
        "isa_bits": detection.isa_bits,
        "steps": [{"source": s.source, "outcome": s.outcome, "level": s.level}
                  for s in detection.steps],
        "warnings": list(detection.warnings),
    }
    return Report(text, data)


def _level_label(candidate: Candidate) -> str:
    return candidate.level or "baseline"


def _candidate_data(candidate: Candidate) -> dict[str, Any]:
    return {"level": _level_label(candidate), "path": candidate.path, "source": candidate.source}


def which(detection: Detection, store: Store, resolution: Resolution) -> Report:
    """The candidate served for one name, and why each higher one was skipped."""
    served = resolution.served
    text = []
    if served:
        text.append(f"{show(resolution.relpath)}: {_level_label(served)} -> {show(served.source)}")
    else:
        text.append(f"{show(resolution.relpath)}: no usable candidate in {show(store.root)}")
    text += [f"  skipped {_level_label(skip.candidate)} ({show(skip.candidate.path)}): "
             f"{skip.reason}"
             for skip in resolution.skipped]
    link = served.verbatim_link if served else None
    if link is not None and is_loader_link(link):
        text.append("  a link to hwcaps-loader, which picks the build itself: with "
                    "-o loader_links a view serves the builds directly (docs/hwcaps-loader.md)")
    text.append(f"  (level in effect: {detection.level}, decided by {detection.decided_by}; "
                f"layout: {store.layout.value})")
    data = {
        "schema": SCHEMA,
        "relpath": resolution.relpath,
        "served": _candidate_data(served) if served else None,
        "skipped": [{**_candidate_data(skip.candidate), "reason": skip.reason, "why": skip.why}
                    for skip in resolution.skipped],
        "level": detection.level,
        "decided_by": detection.decided_by,
        "layout": store.layout.value,
        "root": store.root,
    }
    return Report(text, data)


def check(store: Store, findings: list[Finding]) -> Report:
    """A packager's lint: one line per finding, and a summary."""
    errors = sum(1 for finding in findings if finding.severity is Severity.ERROR)
    warnings = len(findings) - errors
    text = [str(finding) for finding in findings]
    text.append(f"{show(store.root)}: {len(store.files)} names, {errors} errors, "
                f"{warnings} warnings (layout: {store.layout.value})")
    data = {
        "schema": SCHEMA,
        "root": store.root,
        "layout": store.layout.value,
        "names": len(store.files),
        "errors": errors,
        "warnings": warnings,
        "findings": [{"severity": f.severity.value, "path": f.path, "relpath": f.relpath,
                      "message": f.message} for f in findings],
    }
    return Report(text, data)
