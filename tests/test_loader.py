"""The glibc loader as the source of the level: parsers on fixture text, and the real loader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hwcaps_fs.core.levels import X86_64
from hwcaps_fs.detect.cpu import Detection, DetectOptions, detect
from hwcaps_fs.detect.loader import parse_help, parse_list_diagnostics

DIAGNOSTICS_2_36 = """\
dl_dst_lib="lib"
dl_hwcap=0x2
dl_hwcap_important=0x2
dl_hwcap2=0x2
dl_hwcaps_subdirs="x86-64-v4:x86-64-v3:x86-64-v2"
dl_hwcaps_subdirs_active=0x6
dl_minsigstacksize=0x6d0
dl_pagesize=0x1000
dl_platform="x86_64"
env_filtered[0x0]="dl_hwcaps_subdirs_active"
version.release="stable"
version.version="2.36"
x86.cpu_features.basic.kind=0x2
x86.cpu_features.isa_1=0xf
"""

HELP_2_33 = """\
Usage: /lib64/ld-linux-x86-64.so.2 [OPTION]... EXECUTABLE-FILE [ARGS-FOR-PROGRAM...]

Subdirectories of glibc-hwcaps directories, in priority order:
  x86-64-v4
  x86-64-v3 (supported, searched)
  x86-64-v2 (supported, searched)

Legacy HWCAP subdirectories under library search path directories:
  haswell (AT_PLATFORM; supported, searched)
  tls (supported, searched)
"""

# ld.so --help of glibc 2.36 (format: docs/levels.md), GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F and
# --glibc-hwcaps-mask x86-64-v2 (plus a prepended name, which is not a level).
HELP_2_36_MASKED = """\
Subdirectories of glibc-hwcaps directories, in priority order:
  extra (searched)
  x86-64-v4 (masked)
  x86-64-v3 (supported, masked)
  x86-64-v2 (supported, searched)
"""

HELP_AARCH64 = """\
No subdirectories of glibc-hwcaps directories are searched.
"""


def test_list_diagnostics_decodes_subdirs_active_and_isa() -> None:
    report = parse_list_diagnostics(DIAGNOSTICS_2_36)
    assert report is not None
    assert report.subdirs == ("x86-64-v4", "x86-64-v3", "x86-64-v2")
    assert report.active == ("x86-64-v3", "x86-64-v2")  # bit 0 = x86-64-v4 is clear
    assert report.isa_1 == 0xF
    assert report.version == "2.36"


def test_list_diagnostics_without_hwcaps_keys_is_none() -> None:
    assert parse_list_diagnostics("dl_platform=\"x86_64\"\n") is None
    assert parse_list_diagnostics('dl_hwcaps_subdirs="a"\ndl_hwcaps_subdirs_active=zz\n') is None


def test_help_2_33_lists_supported_levels() -> None:
    report = parse_help(HELP_2_33)
    assert report is not None
    assert report.subdirs == ("x86-64-v4", "x86-64-v3", "x86-64-v2")
    assert report.active == ("x86-64-v3", "x86-64-v2")
    assert report.isa_1 is None


def test_help_2_36_masked_counts_supported_and_skips_prepended() -> None:
    report = parse_help(HELP_2_36_MASKED)
    assert report is not None
    assert report.subdirs == ("x86-64-v4", "x86-64-v3", "x86-64-v2")
    assert report.active == ("x86-64-v3", "x86-64-v2")


def test_help_without_hwcaps() -> None:
    report = parse_help(HELP_AARCH64)
    assert report is not None and report.active == ()
    assert parse_help("Usage: ld.so\n") is None


# --- the real loader -----------------------------------------------------------------------


def loader_or_skip() -> str:
    if os.uname().machine not in X86_64.machines:
        pytest.skip("the tunables tests are for x86-64")
    for path in X86_64.loaders:
        if os.path.exists(path):
            return path
    pytest.skip("no glibc x86-64 loader on this machine")


def live(tmp_path: Path, **kwargs: object) -> Detection:
    return detect(
        DetectOptions(
            kernel_cmdline=str(tmp_path / "no-cmdline"),
            config=str(tmp_path / "no-config.toml"),
            **kwargs,  # type: ignore[arg-type]
        )
    )


def test_loader_decides_on_the_live_system(tmp_path: Path) -> None:
    loader_or_skip()
    found = live(tmp_path)
    if found.decided_by == "/proc/cpuinfo":
        pytest.skip(f"the loader gave no report: {found.steps}")
    assert found.decided_by in ("ld.so --list-diagnostics", "ld.so --help")


def test_cpuinfo_route_agrees_with_the_loader(tmp_path: Path) -> None:
    loader_or_skip()
    by_loader = live(tmp_path)
    by_cpuinfo = live(tmp_path, cpuinfo="/proc/cpuinfo")
    assert by_cpuinfo.decided_by == "/proc/cpuinfo"
    assert by_loader.level == by_cpuinfo.level
    assert by_loader.isa_bits == by_cpuinfo.isa_bits
    assert dict(by_loader.missing) == dict(by_cpuinfo.missing)


@pytest.mark.parametrize(
    ("mask", "needs", "expected"),
    [("-AVX512F", "x86-64-v4", "x86-64-v3"), ("-AVX2", "x86-64-v3", "x86-64-v2")],
)
def test_glibc_tunables_mask_like_glibc(
    tmp_path: Path, mask: str, needs: str, expected: str
) -> None:
    loader = loader_or_skip()
    unmasked = live(tmp_path, loader=loader)
    if X86_64.rank(unmasked.hardware_level) < X86_64.rank(needs):
        pytest.skip(f"this CPU is {unmasked.hardware_level}, the test needs {needs}")
    found = live(tmp_path, loader=loader, environ={"GLIBC_TUNABLES": f"glibc.cpu.hwcaps={mask}"})
    assert found.level == expected
    assert found.isa_bits == unmasked.isa_bits  # isa_1 is computed before the tunables
    assert mask[1:] in found.missing[X86_64.level_names[X86_64.rank(expected)]]


def test_missing_loader_falls_back_to_cpuinfo(tmp_path: Path) -> None:
    loader_or_skip()
    found = live(tmp_path, loader=str(tmp_path / "no-ld.so"))
    assert found.decided_by == "/proc/cpuinfo"
    assert found.level == live(tmp_path, cpuinfo="/proc/cpuinfo").level


def test_loader_that_says_nothing_falls_back_to_cpuinfo(tmp_path: Path) -> None:
    loader_or_skip()
    found = live(tmp_path, loader="/bin/true")
    assert found.decided_by == "/proc/cpuinfo"
    assert any("no glibc-hwcaps report" in s.outcome for s in found.steps)
