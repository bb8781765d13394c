"""Detection from /proc/cpuinfo (and aux vector) fixtures of real CPUs, with glibc's rules."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from hwcaps_fs.core.levels import AT_HWCAP, AT_HWCAP2, PPC64LE, S390X
from hwcaps_fs.detect.cpu import Detection, DetectOptions, detect
from hwcaps_fs.detect.cpuinfo import first_block, infer_machine, parse_auxv

FIXTURES = Path(__file__).parent / "fixtures" / "cpuinfo"

# AT_HWCAP2 bits (linux arch/powerpc/include/uapi/asm/cputable.h) as kernels report them.
ARCH_2_07, HTM, DSCR, EBB, ISEL, TAR, VEC_CRYPTO = (1 << b for b in range(31, 24, -1))
ARCH_3_00, IEEE128, DARN, SCV = 0x00800000, 0x00400000, 0x00200000, 0x00100000
ARCH_3_1, MMA = 0x00040000, 0x00020000
POWER8_HWCAP2 = ARCH_2_07 | HTM | DSCR | EBB | ISEL | TAR | VEC_CRYPTO
POWER9_HWCAP2 = POWER8_HWCAP2 | ARCH_3_00 | IEEE128 | DARN | SCV
POWER10_HWCAP2 = POWER9_HWCAP2 | ARCH_3_1 | MMA
AT_PAGESZ = 6


def auxv_bytes(pairs: list[tuple[int, int]], byteorder: str = "<") -> bytes:
    """An aux vector as /proc/PID/auxv holds it on a 64-bit machine, AT_NULL-terminated."""
    return b"".join(struct.pack(byteorder + "QQ", t, v) for t, v in [*pairs, (0, 0)])


def run(tmp_path: Path, **kwargs: object) -> Detection:
    """Detect with no kernel command line or configuration file in the way."""
    options = DetectOptions(
        kernel_cmdline=str(tmp_path / "no-cmdline"),
        config=str(tmp_path / "no-config.toml"),
        **kwargs,  # type: ignore[arg-type]
    )
    return detect(options)


X86_CASES = [
    ("core2-penryn-e8400", "baseline", "x86-64-v2", ("SSE4_2", "POPCNT")),
    ("atom-bonnell-d525", "baseline", "x86-64-v2", ("POPCNT", "SSE4_1", "SSE4_2")),
    ("k10-opteron-6136", "baseline", "x86-64-v2", ("SSSE3", "SSE4_1", "SSE4_2")),
    ("nehalem-core-i7-920", "x86-64-v2", "x86-64-v3", ("AVX", "AVX2", "MOVBE", "XSAVE")),
    ("sandybridge-xeon-e5-2670", "x86-64-v2", "x86-64-v3", ("AVX2", "F16C", "FMA", "LZCNT")),
    ("zhaoxin-kx-u6780a", "x86-64-v2", "x86-64-v3", ("AVX", "AVX2")),
    ("haswell-xeon-e5-2680v3", "x86-64-v3", "x86-64-v4", ("AVX512F", "AVX512VL")),
    ("zen3-ryzen-5950x", "x86-64-v3", "x86-64-v4", ("AVX512F",)),
    ("skylake-x-xeon-gold-6132", "x86-64-v4", None, ()),
    ("zen4-epyc-9654", "x86-64-v4", None, ()),
]


@pytest.mark.parametrize(("fixture", "level", "following", "lacks"), X86_CASES)
def test_x86_fixture_levels(
    tmp_path: Path, fixture: str, level: str, following: str | None, lacks: tuple[str, ...]
) -> None:
    found = run(tmp_path, cpuinfo=str(FIXTURES / fixture))
    assert found.architecture.name == "x86_64"
    assert (found.hardware_level, found.level) == (level, level)
    assert found.decided_by == str(FIXTURES / fixture)
    if following is None:
        assert not found.missing
    else:
        assert next(iter(found.missing)) == following
        assert set(lacks) <= set(found.missing[following])


def test_isa_bits_are_cumulative(tmp_path: Path) -> None:
    assert run(tmp_path, cpuinfo=str(FIXTURES / "zen4-epyc-9654")).isa_bits == 0b1111
    assert run(tmp_path, cpuinfo=str(FIXTURES / "nehalem-core-i7-920")).isa_bits == 0b0011
    assert run(tmp_path, cpuinfo=str(FIXTURES / "core2-penryn-e8400")).isa_bits == 0b0001


def test_zhaoxin_quirk_is_reported(tmp_path: Path) -> None:
    """KX-6000 lists avx2, but glibc unsets AVX/AVX2 on family 7 model 0x3b: never v3."""
    found = run(tmp_path, cpuinfo=str(FIXTURES / "zhaoxin-kx-u6780a"))
    assert any("glibc disables AVX AVX2" in s.outcome for s in found.steps)
    assert found.level == "x86-64-v2"


def test_unknown_vendor_gets_no_level(tmp_path: Path) -> None:
    """glibc skips CPUID leaf 1 for vendors it does not know: no subdirectory at all."""
    text = (FIXTURES / "zen4-epyc-9654").read_text().replace("AuthenticAMD", "GenuineTMx86")
    (tmp_path / "cpuinfo").write_text(text)
    found = run(tmp_path, cpuinfo=str(tmp_path / "cpuinfo"))
    assert found.level == "baseline"
    assert found.isa_bits == 0
    assert any("'GenuineTMx86' is not one glibc knows" in s.outcome for s in found.steps)


def test_sse3_is_required_for_v2_unlike_archspec(tmp_path: Path) -> None:
    text = (FIXTURES / "zen4-epyc-9654").read_text().replace(" pni ", " ")
    (tmp_path / "cpuinfo").write_text(text)
    found = run(tmp_path, cpuinfo=str(tmp_path / "cpuinfo"))
    assert found.level == "baseline"
    assert found.missing["x86-64-v2"] == ("SSE3",)


@pytest.mark.parametrize(
    ("fixture", "hwcap2", "level"),
    [
        ("power8-nvl", POWER8_HWCAP2, "baseline"),
        ("power9", POWER9_HWCAP2, "power9"),
        ("power10", POWER10_HWCAP2, "power10"),
        # A POWER10 guest in POWER9 compatibility mode: the cpu line says POWER10, the bits
        # (which glibc tests) say POWER9.
        ("power10", POWER9_HWCAP2, "power9"),
        # A kernel that does not report ieee128: glibc gives no power9.
        ("power9", POWER9_HWCAP2 & ~IEEE128, "baseline"),
    ],
)
def test_power_levels_from_at_hwcap2(
    tmp_path: Path, fixture: str, hwcap2: int, level: str
) -> None:
    auxv = tmp_path / "auxv"
    auxv.write_bytes(auxv_bytes([(AT_PAGESZ, 65536), (AT_HWCAP, 0xDC0065C2), (AT_HWCAP2, hwcap2)]))
    found = run(tmp_path, cpuinfo=str(FIXTURES / fixture), auxv=str(auxv))
    assert found.architecture is PPC64LE
    assert found.level == level
    assert found.isa_bits is None
    assert not found.warnings


def test_power_without_auxv_guesses_from_generation_with_a_warning(tmp_path: Path) -> None:
    found = run(tmp_path, cpuinfo=str(FIXTURES / "power10"))
    assert found.level == "power10"
    assert len(found.warnings) == 1 and "AT_HWCAP2" in found.warnings[0]


@pytest.mark.parametrize(
    ("fixture", "level"),
    [("s390x-z13", "z13"), ("s390x-z14", "z14"), ("s390x-z15", "z15"), ("s390x-z16", "z16")],
)
def test_s390x_levels_from_features(tmp_path: Path, fixture: str, level: str) -> None:
    found = run(tmp_path, cpuinfo=str(FIXTURES / fixture))
    assert found.architecture is S390X
    assert found.level == level
    assert not found.warnings


def test_s390x_z17_needs_the_facility_bits(tmp_path: Path) -> None:
    text = (FIXTURES / "s390x-z16").read_text()
    text = text.replace("196 197", "196 197 198 199 201").replace("82 129", "82 84 129")
    (tmp_path / "cpuinfo").write_text(text)
    assert run(tmp_path, cpuinfo=str(tmp_path / "cpuinfo")).level == "z17"


def test_s390x_aux_vector_overrides_the_features_line(tmp_path: Path) -> None:
    """A big-endian AT_HWCAP without VXRS_PDE2 (novx-like kernels): z15, not z16."""
    auxv = tmp_path / "auxv"
    hwcap = 2048 | 4096 | 8192 | 16384 | 32768 | 65536
    auxv.write_bytes(auxv_bytes([(AT_HWCAP, hwcap)], ">"))
    found = run(tmp_path, cpuinfo=str(FIXTURES / "s390x-z16"), auxv=str(auxv))
    assert found.level == "z15"
    assert found.missing["z16"] == ("HWCAP_S390_VXRS_PDE2",)


def test_aarch64_is_baseline_only(tmp_path: Path) -> None:
    found = run(tmp_path, cpuinfo=str(FIXTURES / "aarch64-neoverse-n1"))
    assert found.architecture.name == "aarch64"
    assert found.level == "baseline"
    assert found.active_levels() == ()


@pytest.mark.parametrize(
    ("fixture", "machine"),
    [
        ("zen3-ryzen-5950x", "x86_64"),
        ("power9", "ppc64le"),
        ("s390x-z14", "s390x"),
        ("aarch64-neoverse-n1", "aarch64"),
    ],
)
def test_machine_is_inferred_from_the_fixture(fixture: str, machine: str) -> None:
    assert infer_machine(first_block((FIXTURES / fixture).read_text())) == machine


@pytest.mark.parametrize(
    "garbage", ["", "\x00\xff binary junk\n", "flags\n:::\n", "processor : 0\nvendor_id : x\n"]
)
def test_garbled_cpuinfo_gives_baseline_and_one_warning(tmp_path: Path, garbage: str) -> None:
    (tmp_path / "cpuinfo").write_text(garbage)
    found = run(tmp_path, cpuinfo=str(tmp_path / "cpuinfo"), machine="x86_64")
    assert found.level == "baseline"
    assert len(found.warnings) == 1


def test_unknown_machine_is_baseline_only(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text("processor : 0\nisa : rv64imafdc\n")
    found = run(tmp_path, cpuinfo=str(tmp_path / "cpuinfo"), machine="mips64")
    assert found.architecture.name == "mips64"
    assert found.level == "baseline"
    assert found.active_levels() == ()


def test_garbled_auxv_is_a_warning(tmp_path: Path) -> None:
    auxv = tmp_path / "auxv"
    auxv.write_bytes(b"\x01\x02\x03")
    found = run(tmp_path, cpuinfo=str(FIXTURES / "power9"), auxv=str(auxv))
    assert found.level == "power9"  # from the cpu line, with warnings
    assert found.warnings


def test_parse_auxv_stops_at_at_null() -> None:
    data = auxv_bytes([(AT_HWCAP2, 5)]) + auxv_bytes([(AT_HWCAP2, 7)])
    assert parse_auxv(data, PPC64LE) == ({AT_HWCAP2: 5}, ())
