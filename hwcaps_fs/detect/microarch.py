"""archspec's opinion of a /proc/cpuinfo block: a microarchitecture name for humans and, on
x86, a second opinion on the level.

archspec is optional (Debian 12 does not package it): without it the microarchitecture has no
name and nothing is cross-checked; detection is otherwise the same. Only its public API is
used: ``archspec.cpu.TARGETS``, its ``Microarchitecture`` class and their attributes (archspec
0.2.5 on, the first whose targets carry ``cpu_part``). archspec's ``host()`` judges only the
live machine; to judge a copied cpuinfo as well, the rules by which ``host()`` picks a target
(the targets a CPU is compatible with, and the best of those) are spelled out here over those
attributes. Every call is guarded: archspec is advice, and its failure must never stop
detection.

archspec disagrees with glibc by design in places (docs/levels.md): it never checks
SSE3 (``pni``) or the x86 baseline, ignores the vendor, and has no s390x targets. Its level is
therefore only compared, never used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hwcaps_fs.core.levels import ARCHSPEC_GENERIC_LEVELS, Architecture

#: archspec's vendor name for each ARM implementer code (``CPU implementer`` in cpuinfo).
ARM_VENDORS: dict[str, str] = {
    "0x41": "ARM", "0x42": "Broadcom", "0x43": "Cavium", "0x44": "DEC", "0x46": "Fujitsu",
    "0x48": "HiSilicon", "0x49": "Infineon Technologies AG", "0x4d": "Motorola",
    "0x4e": "Nvidia", "0x50": "APM", "0x51": "Qualcomm", "0x53": "Samsung", "0x56": "Marvell",
    "0x61": "Apple", "0x66": "Faraday", "0x68": "HXT", "0x69": "Intel", "0xc0": "Ampere",
}


@dataclass(frozen=True)
class ArchspecView:
    """``microarchitecture`` is archspec's name (``zen2``, ``power9le``, ``s390x``...);
    ``level`` the glibc-hwcaps level of the highest generic x86-64 target it accepts (x86
    only); ``warning`` says why archspec could not answer."""

    microarchitecture: str | None
    level: str | None
    warning: str | None = None


def archspec_view(arch: Architecture, fields: Mapping[str, str]) -> ArchspecView | None:
    """archspec's view of the first /proc/cpuinfo block ``fields`` of a machine of ``arch``;
    None if archspec is not installed."""
    try:
        import archspec.cpu
    except ImportError:
        return None
    try:
        return _view(archspec.cpu, arch, fields)
    except Exception as exc:  # archspec is advice: any failure of it is reported, not raised
        return ArchspecView(None, None, f"archspec failed: {type(exc).__name__}: {exc}")


def _view(cpu: Any, arch: Architecture, fields: Mapping[str, str]) -> ArchspecView:
    """``cpu`` is the module archspec.cpu."""
    targets = cpu.TARGETS
    family = _FAMILIES.get(arch.name)
    if family is None or arch.name not in targets:
        return ArchspecView(cpu.generic_microarchitecture(arch.name).name, None)
    observe, compatible = family
    # The CPU as a nameless Microarchitecture, as host() builds it (archspec adds implied
    # features, such as sse3 for ssse3, which cpuinfo does not list).
    info = cpu.Microarchitecture(name="", parents=[], compilers={}, **observe(fields))
    root = targets[arch.name]
    candidates = [t for t in targets.values() if compatible(info, t, root)]
    level = None
    if arch.name == "x86_64":
        for target, name in ARCHSPEC_GENERIC_LEVELS:
            if not targets[target].features <= info.features:
                break
            level = name
    return ArchspecView(_best(candidates, info, root).name, level)


def _best(candidates: list[Any], info: Any, root: Any) -> Any:
    """``archspec.cpu.host()``'s choice: the deepest descendant of the best generic target."""

    def depth(target: Any) -> tuple[int, int]:
        return len(target.ancestors), len(target.features)

    generic = [c for c in candidates if c.vendor == "generic"] or [root]
    best_generic = max(generic, key=depth)
    if info.cpu_part and any(c.cpu_part == info.cpu_part for c in candidates):
        candidates = [c for c in candidates if c.cpu_part == info.cpu_part]
    descendants = [c for c in candidates if c > best_generic]
    return max(descendants, key=depth) if descendants else best_generic


def _descends(target: Any, root: Any) -> bool:
    return bool(target == root or root in target.ancestors)


# Per family: what archspec reads from cpuinfo (Microarchitecture's arguments), and which
# targets it then calls compatible.

_Observed = dict[str, Any]


def _x86_observed(fields: Mapping[str, str]) -> _Observed:
    return {"vendor": fields.get("vendor_id", "generic"), "features": _words(fields, "flags")}


def _x86_compatible(info: Any, target: Any, root: Any) -> bool:
    return (_descends(target, root) and target.vendor in (info.vendor, "generic")
            and target.features <= info.features)


def _aarch64_observed(fields: Mapping[str, str]) -> _Observed:
    code = fields.get("CPU implementer")
    return {"vendor": ARM_VENDORS.get(code, code) if code else "generic",
            "features": _words(fields, "Features"), "cpu_part": fields.get("CPU part", "")}


def _aarch64_compatible(info: Any, target: Any, root: Any) -> bool:
    # Of the generic targets only the family's root: archspec cannot tell ARMv8.x levels apart.
    if target.vendor == "generic" and target != root:
        return False
    return bool(target.family == root and target.vendor in (info.vendor, "generic")
                and target.features <= info.features)


def _power_observed(fields: Mapping[str, str]) -> _Observed:
    match = re.search(r"POWER(\d+)", fields.get("cpu", ""))
    generation = int(match.group(1)) if match else 0
    return {"vendor": "generic", "features": set(), "generation": generation}


def _power_compatible(info: Any, target: Any, root: Any) -> bool:
    return _descends(target, root) and target.generation <= info.generation


def _words(fields: Mapping[str, str], key: str) -> set[str]:
    return set(fields.get(key, "").split())


_FAMILIES: dict[str, tuple[Callable[[Mapping[str, str]], _Observed],
                           Callable[[Any, Any, Any], bool]]] = {
    "x86_64": (_x86_observed, _x86_compatible),
    "aarch64": (_aarch64_observed, _aarch64_compatible),
    "ppc64le": (_power_observed, _power_compatible),
}
