"""CPU level detection, each step reported.

INTERFACE DRAFT — types fixed, detection being implemented.

Order (see README "How the level is chosen"):
1. overrides, the lowest wins: ``--level`` on the command line, ``HWCAPS_FS_LEVEL``, the kernel
   command line (``hwcaps_fs.level=NAME``, ``hwcaps_fs=off``), ``/etc/hwcaps-fs.toml``; never
   above the hardware unless forced;
2. the system's dynamic loader (``ld.so --list-diagnostics``, else ``ld.so --help``);
3. ``/proc/cpuinfo`` and ``/proc/self/auxv`` with the tables of :mod:`hwcaps_fs.levels`,
   cross-checked with archspec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hwcaps_fs.levels import Architecture
from hwcaps_fs.resolve import Target


@dataclass(frozen=True)
class Step:
    """One detection step: where it looked, what it found (one line), and the level it
    gives, if any."""

    source: str
    outcome: str
    level: str | None = None


@dataclass(frozen=True)
class DetectOptions:
    """Inputs of detection. Paths default to the live system's; tests point them at fixtures.

    ``max_level`` is ``--level``/``--max-level``; ``force_level`` is ``--force-level`` (may
    exceed the hardware). ``cpuinfo``/``auxv`` (``--cpuinfo``/``--auxv``) bypass the loader.
    ``machine`` overrides ``uname -m`` (implied by a cpuinfo fixture of another architecture).
    """

    max_level: str | None = None
    force_level: str | None = None
    cpuinfo: str | None = None
    auxv: str | None = None
    machine: str | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    kernel_cmdline: str = "/proc/cmdline"
    config: str = "/etc/hwcaps-fs.toml"
    loader: str | None = None


@dataclass(frozen=True)
class Detection:
    """The outcome of detection.

    ``hardware_level`` is the highest level the CPU supports (``"baseline"`` when none);
    ``level`` the one in effect after overrides; ``decided_by`` the source of ``level``.
    ``isa_bits``: GNU_PROPERTY_X86_ISA_1 bits the CPU supports, unmasked (x86 only).
    ``missing`` maps each unsupported level to glibc's names of the features it lacks, where
    the source can tell. ``microarchitecture`` is archspec's name for humans.
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

    def target(self, require_trusted: bool) -> Target:
        return Target(self.architecture, self.active_levels(), self.isa_bits, require_trusted)
