"""archspec's opinion of a /proc/cpuinfo block: a microarchitecture name for humans and, on
x86, a second opinion on the level.

archspec only offers ``host()``, which reads the live /proc/cpuinfo and is cached; to judge a
copied cpuinfo as well, this module builds archspec's partial microarchitecture from the fields
(``partial_uarch``, archspec >= 0.2.3) and repeats ``host()``'s choice among the compatible
targets. That reaches into archspec's detection module, hence the pinned version, and why every
call is guarded: archspec is advice, and its failure must never stop detection.

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


@dataclass(frozen=True)
class ArchspecView:
    """``microarchitecture`` is archspec's name (``zen2``, ``power9le``, ``s390x``...);
    ``level`` the glibc-hwcaps level of the highest generic x86-64 target it accepts (x86
    only); ``warning`` says why archspec could not answer."""

    microarchitecture: str | None
    level: str | None
    warning: str | None = None


def archspec_view(arch: Architecture, fields: Mapping[str, str]) -> ArchspecView:
    """archspec's view of the first /proc/cpuinfo block ``fields`` of a machine of ``arch``."""
    try:
        return _view(arch, fields)
    except Exception as exc:  # archspec is advice: any failure of it is reported, not raised
        return ArchspecView(None, None, f"archspec failed: {type(exc).__name__}: {exc}")


def _view(arch: Architecture, fields: Mapping[str, str]) -> ArchspecView:
    from archspec.cpu import TARGETS
    from archspec.cpu.detect import generic_microarchitecture, partial_uarch

    builder = _PARTIAL_INFO.get(arch.name)
    if builder is None or arch.name not in TARGETS:
        return ArchspecView(generic_microarchitecture(arch.name).name, None)
    info = builder(partial_uarch, fields)
    root = TARGETS[arch.name]
    check = _compatible(arch.name, root)
    candidates = [t for t in TARGETS.values() if check(info, t)]
    level = None
    if arch.name == "x86_64":
        features = info.features
        for target, name in ARCHSPEC_GENERIC_LEVELS:
            if not TARGETS[target].features <= features:
                break
            level = name
    return ArchspecView(_best(candidates, info, root).name, level)


def _compatible(family: str, root: Any) -> Callable[[Any, Any], bool]:
    """archspec's compatibility check for ``family``, except powerpc's, which looks up the
    *host's* machine; the same rule is spelled out for it here."""
    from archspec.cpu.detect import COMPATIBILITY_CHECKS

    if family.startswith("ppc"):
        return lambda info, t: (t == root or root in t.ancestors) and (
            t.generation <= info.generation
        )
    check: Callable[[Any, Any], bool] = COMPATIBILITY_CHECKS[family]
    return check


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


def _x86_info(partial: Any, fields: Mapping[str, str]) -> Any:
    return partial(vendor=fields.get("vendor_id", "generic"), features=_words(fields, "flags"))


def _aarch64_info(partial: Any, fields: Mapping[str, str]) -> Any:
    from archspec.cpu.schema import TARGETS_JSON

    code = fields.get("CPU implementer")
    vendors = TARGETS_JSON["conversions"]["arm_vendors"]
    vendor = vendors.get(code, code) if code else "generic"
    return partial(
        vendor=vendor, features=_words(fields, "Features"), cpu_part=fields.get("CPU part", "")
    )


def _power_info(partial: Any, fields: Mapping[str, str]) -> Any:
    match = re.search(r"POWER(\d+)", fields.get("cpu", ""))
    return partial(generation=int(match.group(1)) if match else 0)


def _words(fields: Mapping[str, str], key: str) -> set[str]:
    return set(fields.get(key, "").split())


_PARTIAL_INFO: dict[str, Callable[[Any, Mapping[str, str]], Any]] = {
    "x86_64": _x86_info,
    "aarch64": _aarch64_info,
    "ppc64le": _power_info,
}
