"""``GLIBC_TUNABLES=glibc.cpu.hwcaps=-A,-B`` as glibc applies it to x86 glibc-hwcaps levels.

The loader applies the caller's tunables itself, so this matters where detection reads
/proc/cpuinfo instead (no loader to ask, or ``--cpuinfo``), and for explaining which features a
masked level lacks. glibc's rules (``sysdeps/x86/cpu-tunables.c``, ``elf/dl-tunables.c``):

* ``GLIBC_TUNABLES`` is a colon-separated list of ``name=value``; when ``glibc.cpu.hwcaps``
  appears more than once, the last occurrence wins;
* its value is a comma-separated list; ``-NAME`` disables a feature; names are case-sensitive;
  unknown names, and enabling (``NAME`` without ``-``) a feature glibc only lets you disable,
  are silently ignored;
* AVX and the other features that need the XSAVE state go only when OSXSAVE is masked, or
  both XSAVE and XSAVEC (either one alone is enough for glibc to save that state);
* only x86 levels are lowered: powerpc and s390x test the kernel's hwcaps, not the masked copy.

Pure: an environment in, glibc feature names out.
"""

from __future__ import annotations

from collections.abc import Mapping

TUNABLE = "glibc.cpu.hwcaps"

#: The x86 names ``glibc.cpu.hwcaps`` can only disable (``cpu-tunables.c``), of which the
#: level tables use those listed; XSAVE, XSAVEC and OSXSAVE act through :data:`XSAVE_STATE`.
X86_DISABLE_ONLY: frozenset[str] = frozenset({
    "AVX", "CX8", "FMA", "HTT", "IBT", "RTM", "AVX2", "BMI1", "BMI2", "CMOV", "ERMS", "FMA4",
    "SSE2", "LZCNT", "MOVBE", "SSSE3", "XSAVE", "POPCNT", "SSE4_1", "SSE4_2", "XSAVEC",
    "AVX512F", "OSXSAVE", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512ER", "AVX512PF",
    "AVX512VL",
})

#: The features that need the OS-enabled XSAVE state (and ``XSAVE``, which the level tables
#: use as the cpuinfo stand-in for it): all unusable once that state is masked.
XSAVE_STATE: frozenset[str] = frozenset({
    "XSAVE", "AVX", "AVX2", "F16C", "FMA", "AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ",
    "AVX512VL",
})

#: What masks the XSAVE state: any one of these sets, entirely masked.
XSAVE_MASKS: tuple[frozenset[str], ...] = (frozenset({"OSXSAVE"}),
                                           frozenset({"XSAVE", "XSAVEC"}))


def hwcaps_tunable(environ: Mapping[str, str]) -> str | None:
    """The value of the last ``glibc.cpu.hwcaps`` in ``GLIBC_TUNABLES``, or None."""
    value = None
    for item in environ.get("GLIBC_TUNABLES", "").split(":"):
        key, equals, text = item.partition("=")
        if equals and key == TUNABLE:
            value = text
    return value


def disabled_names(environ: Mapping[str, str]) -> frozenset[str]:
    """The x86 feature names the caller's ``glibc.cpu.hwcaps`` disables (as given)."""
    value = hwcaps_tunable(environ)
    if value is None:
        return frozenset()
    return frozenset(item[1:] for item in value.split(",")
                     if item.startswith("-") and item[1:] in X86_DISABLE_ONLY)


def unusable_features(environ: Mapping[str, str]) -> dict[str, str]:
    """The level-table feature names glibc will not use under the caller's tunables, each
    with why (for the explanations): those disabled by name, and the XSAVE-state ones when
    that state is masked. ``XSAVE`` alone masks nothing a level needs."""
    disabled = disabled_names(environ)
    why = f"GLIBC_TUNABLES {TUNABLE}"
    unusable = {name: f"{why}=-{name}" for name in disabled - {"XSAVE", "XSAVEC", "OSXSAVE"}}
    for mask in XSAVE_MASKS:
        if mask <= disabled:
            masked = ",".join(f"-{name}" for name in sorted(mask))
            for name in XSAVE_STATE:
                unusable.setdefault(name, f"{why}={masked} (no XSAVE state)")
    return unusable
