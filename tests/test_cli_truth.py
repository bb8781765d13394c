"""What ``which``, ``levels`` and ``check`` say is true: capped is not unsupported, a missing
name is not an unusable one (with a hint), an absolute path inside ROOT names its view name,
a file the user names must exist, and a stock /usr/bin lints clean."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.builders import variant_store
from tests.mounting import assert_one_line_error
from tests.test_cli import hwcaps_fs, machine_level

FIXTURES = Path(__file__).parent / "fixtures" / "cpuinfo"


@pytest.fixture
def store(tmp_path: Path, binaries: Path) -> Path:
    return variant_store(binaries, tmp_path / "store", "bin/prog")


def test_capped_level_is_not_called_unsupported(store: Path) -> None:
    if machine_level() in ("baseline", "x86-64-v2"):
        pytest.skip("needs a CPU above x86-64-v2 to cap")
    result = hwcaps_fs("which", "--level", "x86-64-v2", str(store), "bin/prog")
    assert result.returncode == 0, result.stderr
    assert ("skipped x86-64-v3 (glibc-hwcaps/x86-64-v3/bin/prog): level x86-64-v3 not "
            "searched: capped at x86-64-v2 by --level, though this CPU supports it"
            in result.stdout)
    assert "x86-64-v3 not supported" not in result.stdout
    levels = hwcaps_fs("levels", "--level", "x86-64-v2")
    assert "x86-64-v3    supported, not searched (capped by --level)" in levels.stdout


def test_which_hints_at_the_name_in_a_subdirectory(store: Path) -> None:
    result = hwcaps_fs("which", str(store), "prog")
    assert_one_line_error(result, 3)
    assert "prog: no such name in" in result.stderr
    assert "(did you mean bin/prog?)" in result.stderr


def test_which_takes_absolute_paths_inside_root(store: Path) -> None:
    for given in (store / "bin/prog", store / "glibc-hwcaps/x86-64-v3/bin/prog"):
        result = hwcaps_fs("which", "--json", str(store), str(given))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["relpath"] == "bin/prog"
    outside = hwcaps_fs("which", str(store), "/etc/passwd")
    assert_one_line_error(outside, 3)
    assert "is not inside" in outside.stderr


def test_which_a_directory_is_not_a_program(store: Path) -> None:
    assert_one_line_error(hwcaps_fs("which", str(store), "bin"), 3)


@pytest.mark.parametrize("option", ["--cpuinfo", "--auxv"])
def test_a_missing_detection_file_is_exit_3(option: str) -> None:
    result = hwcaps_fs("levels", option, "/nonexistent")
    assert_one_line_error(result, 3)
    assert f"{option} /nonexistent: No such file or directory" in result.stderr


def test_auxv_is_never_ignored_silently(tmp_path: Path) -> None:
    auxv = tmp_path / "auxv"
    auxv.write_bytes(bytes(16))
    result = hwcaps_fs("levels", "--cpuinfo", str(FIXTURES / "haswell-xeon-e5-2680v3"),
                       "--auxv", str(auxv))
    assert result.returncode == 0, result.stderr
    assert "--auxv" in result.stdout and "ignored" in result.stdout
    power11 = hwcaps_fs("levels", "--json", "--cpuinfo", str(FIXTURES / "power11-architected"))
    assert json.loads(power11.stdout)["architecture"] == "ppc64le"


def test_tunables_apply_on_the_cpuinfo_path() -> None:
    result = hwcaps_fs("levels", "--json", "--cpuinfo",
                       str(FIXTURES / "skylake-x-xeon-gold-6132"),
                       env={"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"})
    data = json.loads(result.stdout)
    assert data["level"] == "x86-64-v2"
    assert data["missing_for_next_level"] == ["AVX2"]


def test_cpuinfo_help_says_what_a_file_cannot_show() -> None:
    result = hwcaps_fs("levels", "--help")
    assert "XCR0" in " ".join(result.stdout.split())


def test_check_passes_on_this_machines_usr_bin() -> None:
    """A stock /usr/bin (alternatives symlinks, ld.so, pidof -> /sbin/killall5...) is clean."""
    if not os.path.isdir("/usr/bin") or not os.path.islink("/usr/bin/awk"):
        pytest.skip("no Debian-style /usr/bin with alternatives symlinks here")
    result = hwcaps_fs("check", "--json", "/usr/bin")
    data = json.loads(result.stdout)
    assert [f for f in data["findings"] if f["severity"] == "error"] == []
    assert result.returncode == 0
