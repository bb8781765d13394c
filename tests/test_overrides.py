"""Level overrides: each source, the lowest wins, capping at the hardware, forcing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hwcaps_fs.core.levels import PPC64LE, X86_64
from hwcaps_fs.detect.cpu import Detection, DetectOptions, detect
from hwcaps_fs.detect.overrides import cmdline_level, config_level, parse_level_name
from hwcaps_fs.errors import UsageError

HASWELL = str(Path(__file__).parent / "fixtures" / "cpuinfo" / "haswell-xeon-e5-2680v3")


def run(
    tmp_path: Path, cmdline: str = "", toml: str | None = None, **kwargs: object
) -> Detection:
    """Detect for a Haswell (v3) fixture with the given kernel command line and config."""
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    config = tmp_path / "hwcaps-fs.toml"
    if toml is not None:
        config.write_text(toml)
    options = DetectOptions(
        cpuinfo=HASWELL,
        kernel_cmdline=str(tmp_path / "cmdline"),
        config=str(config),
        **kwargs,  # type: ignore[arg-type]
    )
    return detect(options)


def test_no_override_every_source_reported_as_not_set(tmp_path: Path) -> None:
    found = run(tmp_path)
    assert (found.level, found.decided_by) == ("x86-64-v3", HASWELL)
    sources = [s.source for s in found.steps]
    config = str(tmp_path / "hwcaps-fs.toml")
    for source in ("--level", "HWCAPS_FS_LEVEL", "kernel command line", config):
        assert source in sources


@pytest.mark.parametrize(
    ("kwargs", "cmdline", "toml", "decided_by"),
    [
        ({"max_level": "x86-64-v2"}, "", None, "--level"),
        ({"environ": {"HWCAPS_FS_LEVEL": "x86-64-v2"}}, "", None, "HWCAPS_FS_LEVEL"),
        ({}, "quiet hwcaps_fs.level=x86-64-v2", None, "kernel command line"),
        ({}, "", 'level = "x86-64-v2"\n', "hwcaps-fs.toml"),
    ],
)
def test_each_source_lowers(
    tmp_path: Path, kwargs: dict[str, object], cmdline: str, toml: str | None, decided_by: str
) -> None:
    found = run(tmp_path, cmdline, toml, **kwargs)
    assert found.level == "x86-64-v2"
    assert found.hardware_level == "x86-64-v3"
    assert found.decided_by.endswith(decided_by)
    assert found.active_levels() == ("x86-64-v2",)


def test_lowest_wins(tmp_path: Path) -> None:
    found = run(
        tmp_path,
        "hwcaps_fs.level=x86-64-v2",
        'level = "x86-64-v3"\n',
        max_level="x86-64-v3",
        environ={"HWCAPS_FS_LEVEL": "baseline"},
    )
    assert (found.level, found.decided_by) == ("baseline", "HWCAPS_FS_LEVEL")


def test_override_cannot_raise_above_hardware(tmp_path: Path) -> None:
    found = run(tmp_path, max_level="x86-64-v4")
    assert (found.level, found.decided_by) == ("x86-64-v3", HASWELL)
    assert any("capped at x86-64-v3" in s.outcome for s in found.steps)


def test_force_level_exceeds_hardware_and_covers_its_isa_bits(tmp_path: Path) -> None:
    found = run(tmp_path, force_level="x86-64-v4", max_level="x86-64-v2")
    assert (found.level, found.decided_by) == ("x86-64-v4", "--force-level")
    assert found.hardware_level == "x86-64-v3"
    assert found.isa_bits == 0b1111


def test_kernel_off_means_baseline(tmp_path: Path) -> None:
    found = run(tmp_path, "ro hwcaps_fs=off")
    assert (found.level, found.decided_by) == ("baseline", "kernel command line")
    assert found.active_levels() == ()


def test_kernel_words_after_double_dash_belong_to_init() -> None:
    assert cmdline_level("ro -- hwcaps_fs=off") == (None, "not set")
    assert cmdline_level("hwcaps_fs.level=a hwcaps_fs.level=b")[0] == "b"


def test_x86_64_v1_is_the_baseline() -> None:
    assert parse_level_name(X86_64, "x86-64-v1") == "baseline"
    assert parse_level_name(X86_64, " x86-64-v3 ") == "x86-64-v3"
    assert parse_level_name(PPC64LE, "power9") == "power9"


@pytest.mark.parametrize(
    ("kwargs", "cmdline", "toml", "source"),
    [
        ({"max_level": "x86-64-v9"}, "", None, "--level"),
        ({"force_level": "power9"}, "", None, "--force-level"),
        ({"environ": {"HWCAPS_FS_LEVEL": "v3"}}, "", None, "HWCAPS_FS_LEVEL"),
        ({}, "hwcaps_fs.level=z15", None, "kernel command line"),
        ({}, "", 'level = "haswell"\n', "hwcaps-fs.toml"),
    ],
)
def test_unknown_level_is_a_usage_error(
    tmp_path: Path, kwargs: dict[str, object], cmdline: str, toml: str | None, source: str
) -> None:
    known = r"for x86_64 \(known: baseline, x86-64-v2"
    with pytest.raises(UsageError, match=rf"{source}: unknown level .* {known}"):
        run(tmp_path, cmdline, toml, **kwargs)


@pytest.mark.parametrize("toml", ['level = "x86-64-v3', "level = 3\n", "level = \x00\n"])
def test_malformed_config_is_a_usage_error(tmp_path: Path, toml: str) -> None:
    with pytest.raises(UsageError, match=r"hwcaps-fs\.toml"):
        run(tmp_path, "", toml)


def test_config_without_level_is_not_set(tmp_path: Path) -> None:
    assert run(tmp_path, "", "# level = \"x86-64-v2\"\n").level == "x86-64-v3"


@pytest.mark.parametrize("toml", ['levle = "x86-64-v2"\n', "[mount]\nallow_other = true\n"])
def test_unknown_config_key_is_an_error_naming_it(tmp_path: Path, toml: str) -> None:
    key = toml.split()[0].strip("[]")
    with pytest.raises(UsageError, match=rf"hwcaps-fs\.toml: unknown key '{key}'"):
        run(tmp_path, "", toml)


def test_config_must_be_a_small_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * 10_000)
    for path, why in (("/dev/zero", "not a regular file"), (str(fifo), "not a regular file"),
                      (str(tmp_path), "not a regular file"),
                      (f"{big}/x.toml", "cannot read"), (str(big), "larger than 64 KiB")):
        with pytest.raises(UsageError, match=rf"^{path}: {why}"):
            config_level(path)


@pytest.mark.parametrize("cmdline", ["hwcaps_fs=off hwcaps_fs.level=x86-64-v3",
                                     "hwcaps_fs.level=x86-64-v3 hwcaps_fs=off"])
def test_kernel_off_wins_over_a_kernel_level(tmp_path: Path, cmdline: str) -> None:
    assert run(tmp_path, cmdline).level == "baseline"
    assert run(tmp_path, cmdline, force_level="x86-64-v2").level == "x86-64-v2"


@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_blank_environment_level_is_unset(tmp_path: Path, blank: str) -> None:
    found = run(tmp_path, environ={"HWCAPS_FS_LEVEL": blank})
    assert found.level == "x86-64-v3"
    assert any(step.source == "HWCAPS_FS_LEVEL" and step.outcome == "not set"
               for step in found.steps)
