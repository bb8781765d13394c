"""Detection on the /proc/cpuinfo path: mixed-case POWER names and GLIBC_TUNABLES masking,
with glibc's rules, and the errors for files the user names that do not exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwcaps_fs.core.levels import AT_HWCAP, AT_HWCAP2
from hwcaps_fs.detect.cpu import DetectOptions, detect
from hwcaps_fs.detect.tunables import disabled_names, unusable_features
from hwcaps_fs.errors import PathError
from tests.test_cpu_fixtures import (
    FIXTURES,
    POWER9_HWCAP2,
    POWER10_HWCAP2,
    auxv_bytes,
    run,
)

# -- POWER11 and later ------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["power11-architected", "power12-raw"])
@pytest.mark.parametrize(("hwcap2", "level"), [(POWER10_HWCAP2, "power10"),
                                               (POWER9_HWCAP2, "power9"), (0, "baseline")])
def test_later_power_generations_map_by_their_hwcap2_bits(
    tmp_path: Path, fixture: str, hwcap2: int, level: str
) -> None:
    auxv = tmp_path / "auxv"
    auxv.write_bytes(auxv_bytes([(AT_HWCAP, 0xDC0065C2), (AT_HWCAP2, hwcap2)]))
    found = run(tmp_path, cpuinfo=str(FIXTURES / fixture), auxv=str(auxv))
    assert found.architecture.name == "ppc64le"
    assert found.level == level
    assert not any("ignored" in warning for warning in found.warnings)


@pytest.mark.parametrize("fixture", ["power11-architected", "power12-raw"])
def test_later_power_generations_without_auxv_guess_power10(tmp_path: Path,
                                                             fixture: str) -> None:
    found = run(tmp_path, cpuinfo=str(FIXTURES / fixture))
    assert found.architecture.name == "ppc64le"
    assert found.level == "power10"
    assert any("no AT_HWCAP2 given" in warning for warning in found.warnings)


# -- GLIBC_TUNABLES on the cpuinfo path ---------------------------------------------------------

#: (GLIBC_TUNABLES, level on a v4 CPU): what glibc 2.36's loader searched with each mask.
TUNABLE_CASES = [
    ("", "x86-64-v4"),
    ("glibc.cpu.hwcaps=-AVX512F", "x86-64-v3"),
    ("glibc.cpu.hwcaps=-AVX512VL", "x86-64-v3"),
    ("glibc.cpu.hwcaps=-AVX2", "x86-64-v2"),
    ("glibc.cpu.hwcaps=-AVX", "x86-64-v2"),
    ("glibc.cpu.hwcaps=-FMA", "x86-64-v2"),
    ("glibc.cpu.hwcaps=-BMI1", "x86-64-v2"),
    ("glibc.cpu.hwcaps=-LZCNT", "x86-64-v2"),
    ("glibc.cpu.hwcaps=-MOVBE", "x86-64-v2"),
    ("glibc.cpu.hwcaps=-OSXSAVE", "x86-64-v2"),
    ("glibc.cpu.hwcaps=-XSAVE,-XSAVEC", "x86-64-v2"),
    ("glibc.cpu.hwcaps=-XSAVE", "x86-64-v4"),  # XSAVEC still saves the state
    ("glibc.cpu.hwcaps=-XSAVEC", "x86-64-v4"),
    ("glibc.cpu.hwcaps=-SSE4_2", "baseline"),
    ("glibc.cpu.hwcaps=-POPCNT", "baseline"),
    ("glibc.cpu.hwcaps=-CX8", "baseline"),
    ("glibc.cpu.hwcaps=-SSE2", "baseline"),
    ("glibc.cpu.hwcaps=-AVX2_Usable", "x86-64-v4"),  # the pre-2.32 spelling: ignored
    ("glibc.cpu.hwcaps=-avx2", "x86-64-v4"),  # names are case-sensitive
    ("glibc.cpu.hwcaps=-F16C", "x86-64-v4"),  # cannot be masked directly
    ("glibc.cpu.hwcaps=-SSE3", "x86-64-v4"),  # nor can SSE3
    ("glibc.cpu.hwcaps=-AVX2,AVX2", "x86-64-v2"),  # disable-only: enabling is ignored
    ("glibc.cpu.hwcaps=-AVX2:glibc.cpu.hwcaps=-AVX512F", "x86-64-v3"),  # the last one wins
    ("glibc.cpu.hwcaps=-AVX512F:glibc.cpu.hwcaps=", "x86-64-v4"),
    ("glibc.malloc.check=3:glibc.cpu.hwcaps=-AVX512F,-Foo", "x86-64-v3"),
]


@pytest.mark.parametrize(("tunables", "level"), TUNABLE_CASES)
def test_tunables_mask_levels_as_glibc_does_on_x86(tmp_path: Path, tunables: str,
                                                   level: str) -> None:
    environ = {"GLIBC_TUNABLES": tunables} if tunables else {}
    found = run(tmp_path, cpuinfo=str(FIXTURES / "skylake-x-xeon-gold-6132"), environ=environ)
    assert found.level == level
    # glibc's ISA-note check uses the unmasked bits: a v4 binary still runs.
    assert found.isa_bits == 0xF
    # archspec knows no tunables: it is compared with the unmasked level, and agrees.
    assert not any("archspec" in warning for warning in found.warnings)


def test_tunables_explain_what_the_masked_level_lacks(tmp_path: Path) -> None:
    found = run(tmp_path, cpuinfo=str(FIXTURES / "haswell-xeon-e5-2680v3"),
                environ={"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-OSXSAVE"})
    assert found.level == "x86-64-v2"
    assert set(found.missing["x86-64-v3"]) == {"AVX", "AVX2", "F16C", "FMA", "XSAVE"}
    # -XSAVE alone masks nothing: nothing is explained by it.
    alone = run(tmp_path, cpuinfo=str(FIXTURES / "haswell-xeon-e5-2680v3"),
                environ={"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-XSAVE"})
    assert alone.level == "x86-64-v3"
    assert alone.missing["x86-64-v4"] == ("AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ",
                                          "AVX512VL")


def test_tunables_do_not_lower_power_levels(tmp_path: Path) -> None:
    auxv = tmp_path / "auxv"
    auxv.write_bytes(auxv_bytes([(AT_HWCAP2, POWER10_HWCAP2)]))
    found = run(tmp_path, cpuinfo=str(FIXTURES / "power10"), auxv=str(auxv),
                environ={"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-arch_3_1,-mma"})
    assert found.level == "power10"


def test_tunable_names_parsing() -> None:
    environ = {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX:glibc.cpu.hwcaps=-AVX2,-Foo,BMI1"}
    assert disabled_names(environ) == {"AVX2"}
    assert unusable_features({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-XSAVE"}) == {}


# -- files the user names ------------------------------------------------------------------------


def test_missing_cpuinfo_or_auxv_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PathError, match="--cpuinfo"):
        run(tmp_path, cpuinfo=str(tmp_path / "nonexistent"))
    with pytest.raises(PathError, match="--auxv"):
        run(tmp_path, cpuinfo=str(FIXTURES / "power10"), auxv=str(tmp_path / "nonexistent"))


def test_auxv_for_x86_is_reported_as_ignored(tmp_path: Path) -> None:
    auxv = tmp_path / "auxv"
    auxv.write_bytes(auxv_bytes([(AT_HWCAP2, 2)]))
    found = run(tmp_path, cpuinfo=str(FIXTURES / "haswell-xeon-e5-2680v3"), auxv=str(auxv))
    assert any("--auxv" in warning and "ignored" in warning for warning in found.warnings)


def test_live_detection_still_works() -> None:
    assert detect(DetectOptions()).level
