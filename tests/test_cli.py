"""The command line as a user meets it: real subprocesses, real stores, exit codes and stderr."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.builders import variant_store
from tests.mounting import assert_one_line_error


def hwcaps_fs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hwcaps_fs", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.fixture
def store(tmp_path: Path, binaries: Path) -> Path:
    """A glibc-layout store with bin/prog at every x86-64 level."""
    return variant_store(binaries, tmp_path / "store", "bin/prog")


def machine_level() -> str:
    result = hwcaps_fs("levels", "--json")
    assert result.returncode == 0, result.stderr
    level: str = json.loads(result.stdout)["hardware_level"]
    return level


def test_version_is_the_packages() -> None:
    result = hwcaps_fs("--version")
    assert result.returncode == 0
    assert result.stdout == f"hwcaps-fs {importlib.metadata.version('hwcaps-fs')}\n"


def test_levels_text_and_json_agree() -> None:
    text = hwcaps_fs("levels")
    data = hwcaps_fs("levels", "--json")
    assert text.returncode == data.returncode == 0
    parsed = json.loads(data.stdout)
    assert f"Level in effect: {parsed['level']}" in text.stdout
    assert parsed["decided_by"] in text.stdout


def test_levels_can_be_lowered_not_raised() -> None:
    lowered = json.loads(hwcaps_fs("levels", "--json", "--level", "baseline").stdout)
    assert lowered["level"] == "baseline"
    assert lowered["decided_by"] == "--level"


def test_which_serves_the_machine_level_and_runs_it(store: Path) -> None:
    level = machine_level()
    result = hwcaps_fs("which", "--json", str(store), "bin/prog")
    assert result.returncode == 0, result.stderr
    served = json.loads(result.stdout)["served"]
    assert served["level"] == level
    ran = subprocess.run([str(store / served["source"])], capture_output=True, text=True,
                         check=True)
    assert ran.stdout.strip() == (level if level != "baseline" else "baseline")


def test_which_explains_skipped_higher_levels(store: Path) -> None:
    result = hwcaps_fs("which", "--level", "x86-64-v2", str(store), "bin/prog")
    assert result.returncode == 0, result.stderr
    assert "x86-64-v2 -> glibc-hwcaps/x86-64-v2/bin/prog" in result.stdout
    assert "skipped x86-64-v3" in result.stdout


def test_which_absent_name_is_a_path_error(store: Path) -> None:
    result = hwcaps_fs("which", str(store), "bin/nothing")
    assert_one_line_error(result, 3)
    assert "bin/nothing: no such name in" in result.stderr


def test_check_clean_store_passes(store: Path) -> None:
    result = hwcaps_fs("check", "--json", str(store))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["errors"] == 0


def test_check_reports_variant_without_baseline(store: Path) -> None:
    (store / "bin/prog").unlink()
    result = hwcaps_fs("check", str(store))
    assert result.returncode == 1
    assert "bin/prog" in result.stdout


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["levels", "--level", "x86-64-v9"], 2),
        (["levels", "--bogus"], 2),
        (["frobnicate"], 2),
        (["which", "/nonexistent/store", "bin/x"], 3),
        (["check", "/etc/passwd"], 3),
        (["which", "--layout", "weird", "/tmp", "x"], 2),
    ],
)
def test_bad_input_is_one_line_and_documented_code(args: list[str], code: int) -> None:
    assert_one_line_error(hwcaps_fs(*args), code)


def test_malformed_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "hwcaps-fs.toml"
    config.write_text("level = [unterminated\n")
    assert_one_line_error(hwcaps_fs("levels", "--config", str(config)), 2)
