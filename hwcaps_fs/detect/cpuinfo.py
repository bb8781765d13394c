"""The glibc-hwcaps level from ``/proc/cpuinfo`` and the aux vector, with glibc's rules.

This is the route for a machine without a glibc loader to ask, and for diagnosing another
machine from a copy of its ``/proc/cpuinfo`` (``--cpuinfo``/``--auxv``). glibc itself never
reads /proc/cpuinfo: it uses CPUID/XGETBV on x86, AT_HWCAP2 on powerpc64le and AT_HWCAP (plus
STFLE) on s390x. The kernel prints the same bits under other names, which the tables in
:mod:`hwcaps_fs.core.levels` translate; what the text cannot show (XCR0 state, the caller's
GLIBC_TUNABLES) is why the loader is asked first on a live system.

Everything here is pure: text and bytes in, an :class:`Evaluation` out. Garbage in gives the
baseline and a warning, never an exception, because a wrong guess downwards only costs speed.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from hwcaps_fs.core.levels import (
    AT_HWCAP2,
    POWER_GENERATION_LEVELS,
    X86_64,
    X86_KNOWN_VENDORS,
    X86_MODEL_QUIRKS,
    Architecture,
    Feature,
)

#: How to recognise the machine a /proc/cpuinfo was captured on, tried in order: the field, a
#: text its value must contain, in any case (None: present is enough), the ``uname -m`` it
#: implies. (Kernels print ``POWER10`` but ``Power11 (architected)``.)
MACHINE_SIGNATURES: tuple[tuple[str, str | None, str], ...] = (
    ("vendor_id", "IBM/S390", "s390x"),
    ("cpu", "POWER", "ppc64le"),
    ("CPU implementer", None, "aarch64"),
    ("flags", None, "x86_64"),
)

_KNOWN_VENDORS_STRIPPED = frozenset(vendor.strip() for vendor in X86_KNOWN_VENDORS)


@dataclass(frozen=True)
class Step:
    """One reported step of detection: where it looked, what it found (one line), and the
    level it gives, if any."""

    source: str
    outcome: str
    level: str | None = None


def first_block(text: str) -> dict[str, str]:
    """The ``key : value`` fields of the first processor block (s390x: the summary block).

    Like the kernel's own readers and archspec, only the first block counts: glibc's level is
    per process, not per core, and hybrid CPUs report the same ISA on every core.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if not separator:
            if fields and not line.strip():
                break
            continue
        fields.setdefault(key.strip(), value.strip())
    return fields


def infer_machine(fields: Mapping[str, str]) -> str | None:
    """The ``uname -m`` of the machine whose /proc/cpuinfo gave ``fields``, or None."""
    for key, needle, machine in MACHINE_SIGNATURES:
        value = fields.get(key)
        if value is not None and (needle is None or needle.lower() in value.lower()):
            return machine
    return None


def parse_auxv(data: bytes, arch: Architecture) -> tuple[dict[int, int], tuple[str, ...]]:
    """The aux vector ``data`` (pairs of native unsigned longs, as in /proc/PID/auxv) of a
    machine of ``arch``, as ``{type: value}``, and warnings about anything malformed."""
    if arch.elf_class not in (32, 64):
        return {}, (f"cannot decode an aux vector of {arch.name}: word size unknown",)
    order = "<" if arch.byteorder == "little" else ">"
    pair = struct.Struct(order + ("QQ" if arch.elf_class == 64 else "II"))
    usable = len(data) - len(data) % pair.size
    entries: dict[int, int] = {}
    for a_type, a_val in pair.iter_unpack(data[:usable]):
        if a_type == 0:
            break
        entries.setdefault(a_type, a_val)
    warnings: tuple[str, ...] = ()
    if usable != len(data) or not entries:
        warnings = (f"aux vector of {len(data)} bytes is not a list of {pair.size}-byte pairs",)
    return entries, warnings


@dataclass(frozen=True)
class Evaluation:
    """What a feature list says about the glibc-hwcaps level.

    ``flags_known`` is False when the input did not say which features the CPU has: the level
    is then the baseline by default, not by evidence, and ``missing`` is empty.
    """

    level: str
    isa_bits: int | None
    missing: Mapping[str, tuple[str, ...]]
    steps: tuple[Step, ...]
    warnings: tuple[str, ...]
    flags_known: bool


def evaluate(
    arch: Architecture, fields: Mapping[str, str], auxv: Mapping[int, int], source: str,
    masked: Mapping[str, str] | None = None,
) -> Evaluation:
    """Apply glibc's rules for ``arch`` to a /proc/cpuinfo block and an aux vector.

    ``source`` names where ``fields`` came from, for the steps. ``masked`` maps the features
    the caller's GLIBC_TUNABLES makes unusable to why (:func:`hwcaps_fs.detect.tunables.
    unusable_features`; x86 only): they lower the level and are explained as missing, but not
    ``isa_bits``, which glibc computes before the tunables (its ISA-note check ignores them).
    Each level needs every feature of the levels below it (glibc activates a contiguous tail
    of its list), so the result is the highest level whose features, and all lower ones, are
    usable. ``missing`` holds, for each level not reached, glibc's names of *all* the features
    it still lacks (its own and those of the lower levels), so the next level's entry is what
    to buy.
    """
    reader = _FLAG_READERS.get(arch.name)
    if reader is None:
        step = Step(source, f"{arch.name} has no glibc-hwcaps levels", arch.baseline.name)
        return Evaluation(arch.baseline.name, None, {}, (step,), (), True)
    flags, steps, warnings = reader(arch, fields, auxv, source)
    if flags is None:
        return Evaluation(arch.baseline.name, arch.isa_bits(None), {}, steps, warnings, False)
    unusable, quirk_steps = _x86_vendor_rules(fields, source) if arch is X86_64 else ({}, ())
    steps = (*steps, *quirk_steps)
    masked = dict(masked or {}) if arch is X86_64 else {}
    if masked:
        shown = " ".join(sorted(masked))
        steps = (*steps, Step("GLIBC_TUNABLES", f"glibc will not use {shown}"))
    unmasked, _ = _walk(arch, flags, unusable)
    level, missing = _walk(arch, flags, {**unusable, **masked})
    shown = level or arch.baseline.name
    steps = (*steps, Step(source, _summary(arch, shown, missing), shown))
    return Evaluation(shown, arch.isa_bits(unmasked), missing, steps, warnings, True)


def _walk(
    arch: Architecture, flags: frozenset[str], unusable: Mapping[str, str]
) -> tuple[str | None, dict[str, tuple[str, ...]]]:
    """The highest level reached (None: not even the baseline) and what each level above
    lacks."""

    def lacking(features: tuple[Feature, ...]) -> list[str]:
        return [f.name for f in features if f.flag not in flags or f.name in unusable]

    still_missing = lacking(arch.baseline.features)
    level = None if still_missing else arch.baseline.name
    missing: dict[str, tuple[str, ...]] = {}
    for candidate in arch.levels:
        still_missing += lacking(candidate.features)
        if still_missing:
            missing[candidate.name] = tuple(still_missing)
            continue
        level = candidate.name
    return level, missing


def _summary(arch: Architecture, level: str, missing: Mapping[str, tuple[str, ...]]) -> str:
    if not missing:
        return f"every level supported, up to {level}"
    following = next(iter(missing))
    lacks = " ".join(missing[following])
    return f"supports {level}; {following} needs {lacks}"


_Read = tuple[frozenset[str] | None, tuple[Step, ...], tuple[str, ...]]


def _x86_flags(
    arch: Architecture, fields: Mapping[str, str], auxv: Mapping[int, int], source: str
) -> _Read:
    flags = fields.get("flags")
    if flags is None:
        return None, (), (f"{source}: no x86 'flags' line, so the CPU's level is unknown",)
    return frozenset(flags.split()), (), ()


def _ppc_flags(
    arch: Architecture, fields: Mapping[str, str], auxv: Mapping[int, int], source: str
) -> _Read:
    """AT_HWCAP2, which glibc tests; else a guess from the ``cpu : POWERn`` line."""
    if AT_HWCAP2 in auxv:
        hwcap2 = auxv[AT_HWCAP2]
        names = frozenset(f.flag for f in arch.features if f.hwcap and hwcap2 & f.hwcap[1])
        shown = " ".join(sorted(names)) or "none of the level bits"
        return names, (Step("aux vector", f"AT_HWCAP2={hwcap2:#x}: {shown}"),), ()
    cpu = fields.get("cpu", "")
    match = re.search(r"POWER(\d+)", cpu, re.IGNORECASE)
    if match is None:
        return None, (), (f"{source}: no AT_HWCAP2 and no 'cpu : POWERn' line: level unknown",)
    generation = int(match.group(1))
    guessed = next((name for gen, name in POWER_GENERATION_LEVELS if generation >= gen), None)
    names = frozenset(f.flag for f in arch.features_up_to(guessed or arch.baseline.name))
    warning = (
        f"{source}: no AT_HWCAP2 given; guessed {guessed or 'baseline'} from 'cpu : {cpu}' "
        "(glibc tests AT_HWCAP2 bits, which a compatibility mode or an old kernel may lack)"
    )
    return names, (Step(source, f"POWER generation {generation}", guessed),), (warning,)


def _s390_flags(
    arch: Architecture, fields: Mapping[str, str], auxv: Mapping[int, int], source: str
) -> _Read:
    """The ``features`` names (AT_HWCAP, which the aux vector overrides when given) and the
    ``facilities`` STFLE bit numbers, spelled ``stfle<N>`` as in the tables."""
    features = fields.get("features")
    facilities = fields.get("facilities", "")
    if features is None and not auxv:
        return None, (), (f"{source}: no s390x 'features' line, so the CPU's level is unknown",)
    names = set((features or "").split())
    names.update(f"stfle{n}" for n in facilities.split() if n.isdigit())
    steps: tuple[Step, ...] = ()
    hwcap_features = [f for f in arch.features if f.hwcap and f.hwcap[0] in auxv]
    for feature in hwcap_features:
        assert feature.hwcap is not None
        a_type, mask = feature.hwcap
        if auxv[a_type] & mask:
            names.add(feature.flag)
        else:
            names.discard(feature.flag)
    if hwcap_features:
        steps = (Step("aux vector", "AT_HWCAP read from the aux vector"),)
    return frozenset(names), steps, ()


_FLAG_READERS = {"x86_64": _x86_flags, "ppc64le": _ppc_flags, "s390x": _s390_flags}


def _x86_vendor_rules(
    fields: Mapping[str, str], source: str
) -> tuple[dict[str, str], tuple[Step, ...]]:
    """Features glibc will not use whatever the flags say: all of them for a vendor it does
    not know (it skips CPUID leaf 1), and those of the model quirk table."""
    vendor = fields.get("vendor_id", "").strip()
    if vendor not in _KNOWN_VENDORS_STRIPPED:
        every = {f.name: "unknown vendor" for f in X86_64.features}
        why = (
            f"vendor_id {vendor!r} is not one glibc knows "
            f"({', '.join(sorted(_KNOWN_VENDORS_STRIPPED))}): glibc selects no level"
        )
        return every, (Step(source, why, "baseline"),)
    family, model = _int_field(fields, "cpu family"), _int_field(fields, "model")
    for quirk in X86_MODEL_QUIRKS:
        if vendor in {v.strip() for v in quirk.vendors} and (family, model) == (
            quirk.family,
            quirk.model,
        ):
            disabled = " ".join(quirk.disabled)
            why = f"{quirk.why} (family {family} model {model:#x}): glibc disables {disabled}"
            return dict.fromkeys(quirk.disabled, quirk.why), (Step(source, why),)
    return {}, ()


def _int_field(fields: Mapping[str, str], key: str) -> int | None:
    try:
        return int(fields.get(key, ""))
    except ValueError:
        return None
