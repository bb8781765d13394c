"""The glibc-hwcaps levels of every architecture, as data.

glibc searches ``glibc-hwcaps/<level>/`` subdirectories for shared libraries on exactly three
architectures (x86-64, powerpc64le, s390x); every other architecture has only the baseline.
Each level requires every feature of the levels below it (glibc activates a contiguous tail of
its list), so a CPU's capability is fully described by the highest level it supports.

The tables below are transcribed from glibc (``sysdeps/x86/get-isa-level.h``,
``sysdeps/powerpc/powerpc64/le/dl-hwcaps-subdirs.c``, ``sysdeps/s390/s390-64/dl-hwcaps-subdirs.c``)
and from the Linux names for the same bits (``arch/x86/include/asm/cpufeatures.h``,
``arch/s390/kernel/processor.c``). They are facts, not logic: detection code walks them and never
names a feature itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

AT_HWCAP = 16
AT_HWCAP2 = 26


@dataclass(frozen=True)
class Feature:
    """One CPU feature a level requires.

    ``name`` is glibc's spelling (what ``GLIBC_TUNABLES`` and ``ld.so`` diagnostics use);
    ``flag`` is how ``/proc/cpuinfo`` reports it (x86 ``flags``, s390x ``features``; s390x
    facility bits are spelled ``stfle<N>`` from the ``facilities`` line); ``hwcap`` is the
    ``(auxv type, bit mask)`` where the kernel reports it in the aux vector, if it does.
    """

    name: str
    flag: str
    hwcap: tuple[int, int] | None = None


@dataclass(frozen=True)
class Level:
    """A glibc-hwcaps level: its subdirectory name and the features it adds to the one below.

    ``isa_bit`` is the ``GNU_PROPERTY_X86_ISA_1_*`` bit an ELF file marks when it needs this
    level (x86 only).
    """

    name: str
    features: tuple[Feature, ...]
    isa_bit: int | None = None


@dataclass(frozen=True)
class Architecture:
    """Everything hwcaps-fs needs to know about one architecture.

    ``levels`` are in ascending order, baseline excluded; ``baseline`` lists what glibc checks
    before it activates any level at all. ``machines`` are the ``uname -m`` spellings,
    ``e_machine`` the ELF machine number its executables carry, ``loaders`` the paths of its
    system dynamic loader. ``baseline_dir`` is the directory name the hwcaps-loader layout uses
    for the baseline, where that layout exists for the architecture. ``byteorder`` is how the
    machine stores words (needed to decode an aux vector captured on it).
    """

    name: str
    machines: tuple[str, ...]
    e_machine: int
    elf_class: int
    loaders: tuple[str, ...]
    baseline: Level
    levels: tuple[Level, ...] = ()
    baseline_dir: str | None = None
    byteorder: Literal["little", "big"] = "little"

    @functools.cached_property
    def level_names(self) -> tuple[str, ...]:
        """Level names in ascending order, baseline excluded (resolution asks for every name
        of the store)."""
        return tuple(level.name for level in self.levels)

    def level(self, name: str) -> Level:
        """The level called ``name``; :class:`UnknownLevelError` if this architecture has none."""
        for level in self.levels:
            if level.name == name:
                return level
        if name in (self.baseline.name, self.baseline_dir):
            return self.baseline
        raise UnknownLevelError(name, self)

    def rank(self, name: str) -> int:
        """0 for the baseline, 1 for the lowest level, and so on."""
        if name in (self.baseline.name, self.baseline_dir):
            return 0
        return self.level_names.index(self.level(name).name) + 1

    # Each level requires every feature of the levels below it (glibc activates a contiguous
    # tail of its list), so what a CPU at a level has is always this chain, walked only here.

    def chain(self, name: str) -> tuple[Level, ...]:
        """The baseline and every level up to ``name``, ascending: what a CPU at ``name`` has."""
        return (self.baseline, *self.levels[: self.rank(name)])

    @property
    def features(self) -> tuple[Feature, ...]:
        """Every feature of every level, the baseline's included, in table order."""
        return tuple(f for level in (self.baseline, *self.levels) for f in level.features)

    def features_up_to(self, name: str) -> tuple[Feature, ...]:
        """Every feature level ``name`` needs, the baseline's included, in table order."""
        return tuple(f for level in self.chain(name) for f in level.features)

    def isa_bits(self, name: str | None) -> int | None:
        """The GNU_PROPERTY_X86_ISA_1 bits of a CPU at level ``name`` (None: of a CPU not even
        known to have the baseline, 0), or None where the architecture has no ISA bits."""
        if self.baseline.isa_bit is None:
            return None
        return sum(level.isa_bit or 0 for level in self.chain(name)) if name else 0

    def isa_level_name(self, bits: int) -> str:
        """The name of the highest level whose ISA bit is in ``bits`` (how to say what an ISA
        note asks for), or the raw bits when they name no level."""
        known = 0
        name = None
        for level in (self.baseline, *self.levels):
            if level.isa_bit is not None:
                known |= level.isa_bit
                if bits & level.isa_bit:
                    name = level.name
        if name is None or bits & ~known:
            return f"unknown ISA bits {bits:#x}"
        return name


class UnknownLevelError(ValueError):
    """A level name that the architecture does not have."""

    def __init__(self, name: str, architecture: Architecture) -> None:
        known = ", ".join((architecture.baseline.name, *architecture.level_names))
        super().__init__(f"unknown level {name!r} for {architecture.name} (known: {known})")
        self.name = name


def _x86(name: str, flag: str) -> Feature:
    return Feature(name, flag)


def _ppc(name: str, flag: str, bit: int) -> Feature:
    return Feature(name, flag, (AT_HWCAP2, bit))


def _s390(name: str, flag: str, bit: int) -> Feature:
    return Feature(name, flag, (AT_HWCAP, bit))


def _stfle(name: str, facility: int) -> Feature:
    return Feature(name, f"stfle{facility}")


X86_64 = Architecture(
    name="x86_64",
    machines=("x86_64", "amd64"),
    e_machine=62,
    elf_class=64,
    loaders=("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
    baseline=Level(
        "baseline",
        (
            _x86("CMOV", "cmov"),
            _x86("CX8", "cx8"),
            _x86("FPU", "fpu"),
            _x86("FXSR", "fxsr"),
            _x86("MMX", "mmx"),
            _x86("SSE", "sse"),
            _x86("SSE2", "sse2"),
        ),
        isa_bit=1 << 0,
    ),
    levels=(
        Level(
            "x86-64-v2",
            (
                _x86("CMPXCHG16B", "cx16"),
                _x86("LAHF64_SAHF64", "lahf_lm"),
                _x86("POPCNT", "popcnt"),
                _x86("SSE3", "pni"),
                _x86("SSSE3", "ssse3"),
                _x86("SSE4_1", "sse4_1"),
                _x86("SSE4_2", "sse4_2"),
            ),
            isa_bit=1 << 1,
        ),
        Level(
            "x86-64-v3",
            (
                _x86("AVX", "avx"),
                _x86("AVX2", "avx2"),
                _x86("BMI1", "bmi1"),
                _x86("BMI2", "bmi2"),
                _x86("F16C", "f16c"),
                _x86("FMA", "fma"),
                _x86("LZCNT", "abm"),
                _x86("MOVBE", "movbe"),
                # glibc needs OSXSAVE and XCR0 for AVX; the kernel lists `xsave` exactly when
                # it enabled the extended state, and never prints `osxsave`.
                _x86("XSAVE", "xsave"),
            ),
            isa_bit=1 << 2,
        ),
        Level(
            "x86-64-v4",
            (
                _x86("AVX512F", "avx512f"),
                _x86("AVX512BW", "avx512bw"),
                _x86("AVX512CD", "avx512cd"),
                _x86("AVX512DQ", "avx512dq"),
                _x86("AVX512VL", "avx512vl"),
            ),
            isa_bit=1 << 3,
        ),
    ),
    baseline_dir="x86-64-v1",
)

PPC64LE = Architecture(
    name="ppc64le",
    machines=("ppc64le",),
    e_machine=21,
    elf_class=64,
    loaders=("/lib64/ld64.so.2", "/lib/powerpc64le-linux-gnu/ld64.so.2"),
    baseline=Level("baseline", ()),
    levels=(
        Level(
            "power9",
            (_ppc("arch_3_00", "arch_3_00", 0x00800000), _ppc("ieee128", "ieee128", 0x00400000)),
        ),
        Level(
            "power10",
            (_ppc("arch_3_1", "arch_3_1", 0x00040000), _ppc("mma", "mma", 0x00020000)),
        ),
    ),
)

S390X = Architecture(
    name="s390x",
    machines=("s390x",),
    e_machine=22,
    elf_class=64,
    loaders=("/lib/ld64.so.1", "/lib/s390x-linux-gnu/ld64.so.1"),
    baseline=Level("baseline", ()),
    byteorder="big",
    levels=(
        Level("z13", (_s390("HWCAP_S390_VX", "vx", 2048),)),
        Level(
            "z14",
            (
                _s390("HWCAP_S390_VXD", "vxd", 4096),
                _s390("HWCAP_S390_VXE", "vxe", 8192),
                _s390("HWCAP_S390_GS", "gs", 16384),
            ),
        ),
        Level(
            "z15",
            (
                _s390("HWCAP_S390_VXRS_EXT2", "vxe2", 32768),
                _s390("HWCAP_S390_VXRS_PDE", "vxp", 65536),
            ),
        ),
        Level("z16", (_s390("HWCAP_S390_VXRS_PDE2", "vxp2", 524288),)),
        Level(
            "z17",
            (
                _stfle("MIE4", 84),
                _stfle("VXRS_EXT3", 198),
                _stfle("VXRS_PDE3", 199),
                _stfle("CONCURRENT_FUNCTIONS", 201),
            ),
        ),
    ),
)

#: Architectures with no glibc-hwcaps levels: only the baseline directory is ever searched.
BASELINE_ONLY = (
    Architecture("aarch64", ("aarch64", "arm64"), 183, 64, ("/lib/ld-linux-aarch64.so.1",),
                 Level("baseline", ())),
    Architecture("riscv64", ("riscv64",), 243, 64, ("/lib/ld-linux-riscv64-lp64d.so.1",),
                 Level("baseline", ())),
    Architecture("loongarch64", ("loongarch64",), 258, 64,
                 ("/lib64/ld-linux-loongarch-lp64d.so.1",), Level("baseline", ())),
    Architecture("i686", ("i386", "i486", "i586", "i686"), 3, 32, ("/lib/ld-linux.so.2",),
                 Level("baseline", ())),
    Architecture("armhf", ("armv7l", "armv8l"), 40, 32, ("/lib/ld-linux-armhf.so.3",),
                 Level("baseline", ())),
)

ARCHITECTURES: tuple[Architecture, ...] = (X86_64, PPC64LE, S390X, *BASELINE_ONLY)

#: hwcaps-loader's level directories for 32-bit x86 builds, which it also tries on x86-64
#: after ``x86-64-v1``; glibc-hwcaps has no such levels, so hwcaps-fs ignores them.
LOADER_IA32_LEVELS: frozenset[str] = frozenset({"i386", "i486", "i586", "i686"})

#: Every level directory name glibc or hwcaps-loader knows, on any architecture.
ALL_LEVEL_NAMES: frozenset[str] = frozenset(
    name
    for arch in ARCHITECTURES
    for name in (*arch.level_names, *((arch.baseline_dir,) if arch.baseline_dir else ()))
)


class UnknownArchitectureError(ValueError):
    """A machine name none of the tables describe."""


def architecture_for_machine(machine: str) -> Architecture:
    """The architecture ``uname -m`` calls ``machine``.

    An unknown machine is not an error for serving (it simply has no levels): callers that
    only need the levels catch :class:`UnknownArchitectureError` and serve the baseline.
    """
    for arch in ARCHITECTURES:
        if machine in arch.machines:
            return arch
    raise UnknownArchitectureError(f"unknown machine {machine!r}: no glibc-hwcaps levels known")


def architecture_of_level(name: str) -> Architecture | None:
    """Which architecture has a level (or hwcaps-loader baseline directory) called ``name``."""
    for arch in ARCHITECTURES:
        if name in arch.level_names or name == arch.baseline_dir:
            return arch
    return None


def baseline_only_architecture(machine: str) -> Architecture:
    """A stand-in for a machine none of the tables describe: it has the baseline and nothing
    else, so that serving never depends on knowing the CPU. ``e_machine`` 0 (``EM_NONE``)
    says that the ELF machine of its executables is unknown, not that it must be 0."""
    return Architecture(machine, (machine,), 0, 0, (), Level("baseline", ()))


# --- x86 vendor rules --------------------------------------------------------------------------
#
# glibc's ``init_cpu_features`` (sysdeps/x86/cpu-features.c) reads CPUID leaf 1 and 0x80000001
# only for the vendors it knows; for any other vendor string ``get_isa_level`` returns 0, so no
# glibc-hwcaps subdirectory is searched at all. /proc/cpuinfo prints the vendor string as is.

#: CPUID vendor strings glibc recognises (``vendor_id`` in /proc/cpuinfo).
X86_KNOWN_VENDORS: frozenset[str] = frozenset(
    {"GenuineIntel", "AuthenticAMD", "HygonGenuine", "CentaurHauls", "  Shanghai  "}
)


@dataclass(frozen=True)
class X86ModelQuirk:
    """Features glibc turns off for one CPU model after reading CPUID, whatever CPUID says.

    ``model`` is the full model number (base plus extended model), which is what Linux prints
    on the ``model`` line and what glibc compares after adding ``extended_model``.
    """

    vendors: frozenset[str]
    family: int
    model: int
    disabled: tuple[str, ...]
    why: str


_ZHAOXIN = frozenset({"CentaurHauls", "  Shanghai  "})

#: glibc ``init_cpu_features``, ``arch_kind_zhaoxin`` branch: AVX and AVX2 are unset on these
#: models (slow 256-bit units), so x86-64-v3 is never selected there although /proc/cpuinfo
#: lists ``avx2`` (family 6 since glibc 2.32, family 7 models 0x1b/0x3b by 2.39).
X86_MODEL_QUIRKS: tuple[X86ModelQuirk, ...] = (
    X86ModelQuirk(_ZHAOXIN, 6, 0x0F, ("AVX", "AVX2"), "older Zhaoxin"),
    X86ModelQuirk(_ZHAOXIN, 6, 0x19, ("AVX", "AVX2"), "older Zhaoxin"),
    X86ModelQuirk(_ZHAOXIN, 7, 0x1B, ("AVX", "AVX2"), "Zhaoxin Wudaokou (KX-5000)"),
    X86ModelQuirk(_ZHAOXIN, 7, 0x3B, ("AVX", "AVX2"), "Zhaoxin Lujiazui (KX-6000)"),
)

# --- POWER generations -------------------------------------------------------------------------

#: The level a POWER generation (the ``cpu : POWERn`` line of /proc/cpuinfo) normally has, highest
#: first. Only a guess for when AT_HWCAP2 is unknown: glibc tests the AT_HWCAP2 bits, and a
#: kernel in a compatibility mode or too old to report ``ieee128``/``mma`` gives less.
POWER_GENERATION_LEVELS: tuple[tuple[int, str], ...] = ((10, "power10"), (9, "power9"))

# --- archspec ----------------------------------------------------------------------------------

#: archspec's generic x86-64 targets and the glibc-hwcaps level each corresponds to.
ARCHSPEC_GENERIC_LEVELS: tuple[tuple[str, str], ...] = (
    ("x86_64", "baseline"),
    ("x86_64_v2", "x86-64-v2"),
    ("x86_64_v3", "x86-64-v3"),
    ("x86_64_v4", "x86-64-v4"),
)
