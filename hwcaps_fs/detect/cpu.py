"""CPU level detection, each step reported.

Order (see README "How the level is chosen"):
1. overrides, the lowest wins: ``--level`` on the command line, ``HWCAPS_FS_LEVEL``, the kernel
   command line (``hwcaps_fs.level=NAME``, ``hwcaps_fs=off``), ``/etc/hwcaps-fs.toml``; never
   above the hardware unless forced (``--force-level``);
2. the system's dynamic loader (``ld.so --list-diagnostics``, else ``ld.so --help``), which
   knows what /proc/cpuinfo cannot show (XCR0, vendor quirks, GLIBC_TUNABLES masking);
3. ``/proc/cpuinfo`` and ``/proc/self/auxv`` with the tables of :mod:`hwcaps_fs.core.levels`,
   cross-checked with archspec. A given ``--cpuinfo``/``--auxv`` skips the loader: it
   describes another machine (or the same one, to check the tables).

Detection never fails on what it reads: unreadable or garbled input gives the baseline and a
warning, since serving the baseline is always correct, only slower. What the *user* wrote wrong
fails loudly as :class:`~hwcaps_fs.errors.UsageError`: an unknown level name in any override
or in ``--force-level``, and a malformed configuration file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hwcaps_fs.core.levels import (
    Architecture,
    UnknownArchitectureError,
    architecture_for_machine,
    baseline_only_architecture,
)
from hwcaps_fs.core.resolve import Target
from hwcaps_fs.detect.cpuinfo import (
    Evaluation,
    Step,
    evaluate,
    first_block,
    infer_machine,
    parse_auxv,
)
from hwcaps_fs.detect.loader import LoaderReport, probe_loader
from hwcaps_fs.detect.overrides import Override, parse_level_name, read_overrides
from hwcaps_fs.detect.tunables import unusable_features
from hwcaps_fs.errors import PathError

if TYPE_CHECKING:
    from hwcaps_fs.detect.microarch import ArchspecView

LIVE_CPUINFO = "/proc/cpuinfo"
LIVE_AUXV = "/proc/self/auxv"
FORCE_SOURCE = "--force-level"


@dataclass(frozen=True)
class DetectOptions:
    """Inputs of detection. Paths default to the live system's; tests point them at fixtures.

    ``max_level`` is ``--level``/``--max-level``, ``option_level`` ``-o level=`` (each an
    override: the lowest wins); ``force_level`` is ``--force-level`` (may
    exceed the hardware). ``cpuinfo``/``auxv`` (``--cpuinfo``/``--auxv``) bypass the loader.
    ``machine`` overrides ``uname -m`` (implied by a cpuinfo fixture of another architecture).
    ``environ`` is the environment of the programs served: ``HWCAPS_FS_LEVEL`` is read from it
    and the loader runs with exactly it (so its ``GLIBC_TUNABLES`` masking applies).
    ``cross_check`` asks archspec too (the microarchitecture's name and a second opinion); the
    daemon goes without: it starts on the boot path, and archspec costs more than the rest.
    """

    max_level: str | None = None
    option_level: str | None = None
    force_level: str | None = None
    cpuinfo: str | None = None
    auxv: str | None = None
    machine: str | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    kernel_cmdline: str = "/proc/cmdline"
    config: str = "/etc/hwcaps-fs.toml"
    loader: str | None = None
    cross_check: bool = True


@dataclass(frozen=True)
class Detection:
    """The outcome of detection.

    ``hardware_level`` is the highest level the CPU supports (``"baseline"`` when none), as the
    deciding source sees it (the loader's answer includes GLIBC_TUNABLES masking); ``level``
    the one in effect after overrides; ``decided_by`` the source of ``level``.
    ``isa_bits``: GNU_PROPERTY_X86_ISA_1 bits the CPU supports, unmasked (x86 only); with
    ``--force-level`` they include the forced level's bits.
    ``missing`` maps each unsupported level, lowest first, to glibc's names of *all* the
    features it lacks (including lower levels' ones), where the source can tell; the first
    entry is "what the next level needs". ``microarchitecture`` is archspec's name for humans.
    """

    architecture: Architecture
    hardware_level: str
    level: str
    decided_by: str
    isa_bits: int | None
    missing: Mapping[str, tuple[str, ...]]
    microarchitecture: str | None
    steps: tuple[Step, ...]
    warnings: tuple[str, ...] = ()

    def active_levels(self) -> tuple[str, ...]:
        """The levels searched, highest first, baseline excluded."""
        rank = self.architecture.rank(self.level)
        return tuple(reversed(self.architecture.level_names[:rank]))

    def supported_levels(self) -> tuple[str, ...]:
        """The levels the CPU supports, highest first, baseline excluded."""
        rank = self.architecture.rank(self.hardware_level)
        return tuple(reversed(self.architecture.level_names[:rank]))

    def target(self, require_trusted: bool) -> Target:
        capped = self.architecture.rank(self.level) < self.architecture.rank(self.hardware_level)
        return Target(self.architecture, self.active_levels(), self.isa_bits, require_trusted,
                      self.supported_levels(), self.decided_by if capped else None)


@dataclass(frozen=True)
class _Hardware:
    """What the hardware source decided, before overrides."""

    level: str
    source: str
    isa_bits: int | None
    missing: Mapping[str, tuple[str, ...]]


def detect(options: DetectOptions) -> Detection:
    """Detect the level to serve; see the module docstring for the order and error policy.

    Raises :class:`~hwcaps_fs.errors.UsageError` for an unknown level name (from any override
    or ``force_level``) and for an unreadable or malformed configuration file; never for what
    is read from the CPU side.
    """
    steps: list[Step] = []
    warnings: list[str] = []
    given = options.cpuinfo is not None or options.auxv is not None
    cpuinfo_path = options.cpuinfo or LIVE_CPUINFO
    text = (_read_given(options.cpuinfo, "--cpuinfo").decode("utf-8", "replace")
            if options.cpuinfo else _read(cpuinfo_path))
    fields = first_block(text or "")
    host = os.uname().machine
    machine = options.machine or (infer_machine(fields) if options.cpuinfo else None) or host
    if options.cpuinfo and not options.machine and infer_machine(fields) is None:
        steps.append(Step(cpuinfo_path, f"machine not recognisable; assuming {host}"))
    arch = _architecture(machine, steps)

    overrides = read_overrides(
        arch, (options.max_level, options.option_level), options.environ,
        options.kernel_cmdline, options.config,
    )
    steps.extend(Step(o.source, o.outcome, o.level) for o in overrides)
    forced = (
        parse_level_name(arch, options.force_level, FORCE_SOURCE) if options.force_level else None
    )

    auxv = _auxv(arch, options, given, warnings)
    masked = unusable_features(options.environ)
    evaluation = (
        evaluate(arch, fields, auxv, cpuinfo_path, masked) if text is not None else None
    )
    report = None if given or machine != host else _ask_loader(arch, options, steps)
    if report is not None:
        hardware = _from_loader(arch, report, evaluation, options.environ, steps, warnings)
    elif evaluation is not None:
        steps.extend(evaluation.steps)
        warnings.extend(evaluation.warnings)
        source = f"{cpuinfo_path} and {options.auxv or LIVE_AUXV}" if auxv else cpuinfo_path
        hardware = _Hardware(evaluation.level, source, evaluation.isa_bits, evaluation.missing)
    else:
        hardware = _Hardware(arch.baseline.name, cpuinfo_path, arch.isa_bits(None), {})

    view: ArchspecView | None = None
    if fields and options.cross_check:
        from hwcaps_fs.detect.microarch import archspec_view  # not for the daemon: boot waits

        view = archspec_view(arch, fields)
    if view is not None:
        # archspec knows nothing of GLIBC_TUNABLES: compare it with the unmasked rules.
        plain = evaluate(arch, fields, auxv, cpuinfo_path) if masked and text else evaluation
        _compare_archspec(view.level, view.warning, plain, steps, warnings)

    level, decided_by = _apply_overrides(arch, hardware, overrides, forced, steps)
    isa_bits = hardware.isa_bits
    if forced is not None and isa_bits is not None:
        isa_bits |= arch.isa_bits(forced) or 0
    return Detection(
        architecture=arch,
        hardware_level=hardware.level,
        level=level,
        decided_by=decided_by,
        isa_bits=isa_bits,
        missing=hardware.missing,
        microarchitecture=view.microarchitecture if view else None,
        steps=tuple(steps),
        warnings=tuple(warnings),
    )


def _read(path: str) -> str | None:
    """The text of the live ``path``, or None (then the baseline is assumed)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError:
        return None


def _read_given(path: str, option: str) -> bytes:
    """The content of a file the user named: not there is their mistake, not a guess."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise PathError(f"{option} {path}: {exc.strerror}") from None


def _architecture(machine: str, steps: list[Step]) -> Architecture:
    try:
        return architecture_for_machine(machine)
    except UnknownArchitectureError as exc:
        steps.append(Step("machine", f"{exc}; serving the baseline only", "baseline"))
        return baseline_only_architecture(machine)


def _auxv(
    arch: Architecture, options: DetectOptions, given: bool, warnings: list[str]
) -> dict[int, int]:
    """The aux vector where it carries the level (powerpc64le, s390x): the given file, or the
    live one when the live CPU is described. An x86 aux vector says nothing about levels, so
    a given one is reported as ignored, never dropped silently."""
    uses_auxv = any(f.hwcap for level in arch.levels for f in level.features)
    if options.auxv is not None:
        path, data = options.auxv, _read_given(options.auxv, "--auxv")
        if not uses_auxv:
            warnings.append(f"--auxv {path} ignored: the {arch.name} levels do not come from "
                            "the aux vector")
            return {}
    elif given or not uses_auxv:
        return {}
    else:
        path = LIVE_AUXV
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as exc:
            warnings.append(f"cannot read {path}: {exc.strerror}")
            return {}
    entries, problems = parse_auxv(data, arch)
    warnings.extend(f"{path}: {problem}" for problem in problems)
    return entries


def _ask_loader(
    arch: Architecture, options: DetectOptions, steps: list[Step]
) -> LoaderReport | None:
    """Run the first loader that exists (or the one given) and return its report."""
    candidates = (options.loader,) if options.loader else arch.loaders
    loader = next((p for p in candidates if options.loader or os.path.exists(p)), None)
    if loader is None:
        tried = ", ".join(candidates) or "none known"
        steps.append(Step("dynamic loader", f"not found ({tried})"))
        return None
    report, notes = probe_loader(loader, options.environ)
    steps.extend(Step("dynamic loader", note) for note in notes)
    return report


def _from_loader(
    arch: Architecture,
    report: LoaderReport,
    evaluation: Evaluation | None,
    environ: Mapping[str, str],
    steps: list[Step],
    warnings: list[str],
) -> _Hardware:
    """The level the loader would search up to, with ``missing`` explained from /proc/cpuinfo
    and GLIBC_TUNABLES (the loader says *that* a level is off, not why)."""
    unknown = [name for name in report.active if name not in arch.level_names]
    if unknown:
        warnings.append(f"{report.method} searches levels hwcaps-fs does not know: {unknown}")
    known = [name for name in report.active if name in arch.level_names]
    level = max(known, key=arch.rank, default=arch.baseline.name)
    active = ", ".join(report.active) or "none"
    glibc = f"glibc {report.version}: " if report.version else ""
    steps.append(Step(report.method, f"{glibc}searches {active}", level))
    if evaluation is not None and evaluation.flags_known:
        above = [n for n in arch.level_names if arch.rank(n) > arch.rank(level)]
        if above and above[0] not in report.subdirs and evaluation.level in above:
            steps.append(Step(report.method, f"this glibc does not know {above[0]}"))
            level = evaluation.level
        elif evaluation.level != level:
            steps.append(Step(LIVE_CPUINFO, f"alone would give {evaluation.level}"))
    masked = unusable_features(environ) if arch.baseline.isa_bit is not None else {}
    missing: dict[str, tuple[str, ...]] = {}
    for name in arch.level_names[arch.rank(level):]:
        lacking = evaluation.missing.get(name, ()) if evaluation else ()
        missing[name] = tuple(
            f.name for f in arch.features_up_to(name) if f.name in lacking or f.name in masked
        )
    isa_bits = report.isa_1
    if isa_bits is None and arch.baseline.isa_bit is not None:
        isa_bits = evaluation.isa_bits if evaluation and evaluation.flags_known else None
        isa_bits = isa_bits if isa_bits is not None else arch.isa_bits(level)
    return _Hardware(level, report.method, isa_bits, missing)


def _compare_archspec(
    archspec_level: str | None,
    archspec_warning: str | None,
    evaluation: Evaluation | None,
    steps: list[Step],
    warnings: list[str],
) -> None:
    """x86: note whether archspec's generic target agrees with glibc's rules on the flags."""
    if archspec_warning:
        warnings.append(archspec_warning)
    if archspec_level is None or evaluation is None or not evaluation.flags_known:
        return
    if archspec_level == evaluation.level:
        steps.append(Step("archspec", f"agrees: {archspec_level}", archspec_level))
        return
    line = f"archspec's generic target is {archspec_level}; glibc's rules give {evaluation.level}"
    steps.append(Step("archspec", line, archspec_level))
    warnings.append(line)


def _apply_overrides(
    arch: Architecture,
    hardware: _Hardware,
    overrides: tuple[Override, ...],
    forced: str | None,
    steps: list[Step],
) -> tuple[str, str]:
    """``(level, decided_by)``: the forced level, else the lowest override not above the
    hardware (ties go to the earlier source), else the hardware level."""
    if forced is not None:
        steps.append(Step(FORCE_SOURCE, f"forced to {forced}", forced))
        return forced, FORCE_SOURCE
    requested = [o for o in overrides if o.level is not None]
    if not requested:
        return hardware.level, hardware.source
    lowest = min(requested, key=lambda o: arch.rank(o.level or arch.baseline.name))
    assert lowest.level is not None
    if arch.rank(lowest.level) <= arch.rank(hardware.level):
        steps.append(Step(lowest.source, f"lowers the level to {lowest.level}", lowest.level))
        return lowest.level, lowest.source
    line = f"asks for {lowest.level}, capped at {hardware.level}: the CPU supports no more"
    steps.append(Step(lowest.source, line, hardware.level))
    return hardware.level, hardware.source

