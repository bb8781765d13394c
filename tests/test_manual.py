"""What a user reads: --help with descriptions and examples, the manual pages and
the bash completion, all generated from the one parser; each checked against it."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hwcaps_fs.commands import completion, manpage
from hwcaps_fs.commands.cli import COMMANDS, build_parser, option_label, subcommands
from hwcaps_fs.core.mount_options import CHOICES, DOCUMENTED, FLAGS, parse_mount_options
from hwcaps_fs.errors import EXIT_STATUSES
from tests.mounting import hwcaps_fs
from tests.test_units import make_install

TOP = Path(__file__).resolve().parents[1]
SAMPLE_VALUES = {"LEVEL": "x86-64-v2", "NAME": "view", "hwcaps-fs.SUFFIX": "hwcaps-fs.view",
                 "glibc|loader": "loader", "files|symlinks": "symlinks", "on|off": "off",
                 "DIR": "/run/view/bin"}


def every_option() -> list[tuple[str, argparse.Action]]:
    return [(name, action) for name, sub in subcommands(build_parser()).items()
            for action in sub._actions if not isinstance(action, argparse._HelpAction)]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_has_a_description_and_examples(command: str) -> None:
    result = hwcaps_fs(command, "--help")
    assert result.returncode == 0, result.stderr
    assert COMMANDS[command].description.split()[0] in result.stdout
    examples = result.stdout.split("examples:\n")[1]
    for line, _ in COMMANDS[command].examples:
        assert f"  {line}\n" in examples


def test_mount_help_lists_every_mount_option() -> None:
    text = hwcaps_fs("mount", "--help").stdout
    for name, _ in DOCUMENTED:
        assert f"  {name} " in text


def test_the_option_table_is_what_the_parser_accepts() -> None:
    """Every documented option parses, and every option the parser knows is documented."""
    for name, _ in DOCUMENTED:
        option, _, value = name.partition("=")
        word = f"{option}={SAMPLE_VALUES[value]}" if value else option
        parse_mount_options([word], is_root=True)
    documented = {name.partition("=")[0] for name, _ in DOCUMENTED}
    assert FLAGS | set(CHOICES) | {"fsname", "subtype", "level", "loader_links"} <= documented


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("man")
    subprocess.run([sys.executable, "-m", "hwcaps_fs.commands.manpage", str(directory)], check=True,
                   capture_output=True, cwd=TOP)
    return directory


def rendered(page: Path) -> str:
    """The page as man shows it, failing on any warning of groff's."""
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    result = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True,
                            text=True, env={"MANWIDTH": "200", "LC_ALL": "C.UTF-8",
                                            "PATH": "/usr/bin:/bin", "MAN_KEEP_FORMATTING": ""},
                            check=True)
    assert result.stderr == ""
    return result.stdout


def test_the_manual_has_every_command_and_option(pages: Path) -> None:
    text = rendered(pages / "hwcaps-fs.1")
    for name, action in every_option():
        assert f"hwcaps-fs {name}" in text
        assert option_label(action) in text, (name, option_label(action))
        assert (action.help or "").split("%")[0][:30] in " ".join(text.split())
    for code, _ in EXIT_STATUSES:
        assert f"\n       {code} " in text


def test_the_mount_helper_manual_has_every_mount_option(pages: Path) -> None:
    text = rendered(pages / "mount.hwcaps-fs.8")
    for name, _ in DOCUMENTED:
        assert f"\n       {name}" in text
    for code, _ in manpage.HELPER_EXIT_STATUSES:
        assert f"\n       {code} " in text


def test_pages_are_reproducible(pages: Path, tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "hwcaps_fs.commands.manpage", str(tmp_path)], check=True,
                   capture_output=True, cwd=TOP)
    for page in manpage.PAGES:
        assert (tmp_path / page).read_text() == (pages / page).read_text()


# -- bash completion ------------------------------------------------------------------------


def complete(script: Path, *words: str) -> list[str]:
    """What bash offers after ``words`` (the last one being completed)."""
    program = (f"source {script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
               f"COMP_CWORD={len(words) - 1}\n_hwcaps_fs 2>/dev/null\n"
               'printf "%s\\n" "${COMPREPLY[@]}"\n')
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True,
                            check=True, cwd="/")
    return result.stdout.split()


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    path = tmp_path_factory.mktemp("completion") / "hwcaps-fs"
    path.write_text(completion.script())
    return path


def test_completion_offers_every_command_and_option(script: Path) -> None:
    assert complete(script, "hwcaps-fs", "") == [*COMMANDS, "--help", "--version"]
    for name, action in every_option():
        for option in action.option_strings:
            assert option in complete(script, "hwcaps-fs", name, option[:2]), (name, option)


@pytest.mark.parametrize(("words", "expected"), [
    (("mount", "--level", "x86-64-v"), ["x86-64-v2", "x86-64-v3", "x86-64-v4"]),
    (("mount", "--layout", ""), ["glibc", "loader"]),
    (("mount", "-o", "allow_other,pre"), ["allow_other,presentation="]),
    (("mount", "/et"), ["/etc"]),
    (("run", "--root", "/et"), ["/etc"]),
    (("run", "--root", "/", "--", "hwcaps-fs-no-such"), []),
])
def test_completion_completes_values(script: Path, words: tuple[str, ...],
                                     expected: list[str]) -> None:
    assert sorted(complete(script, "hwcaps-fs", *words)) == expected


def test_completion_completes_files(script: Path) -> None:
    (script.parent / "cpuinfo-a").touch()
    (script.parent / "cpuinfo-b").touch()
    offered = complete(script, "hwcaps-fs", "levels", "--cpuinfo", f"{script.parent}/cpu")
    assert sorted(offered) == [f"{script.parent}/cpuinfo-a", f"{script.parent}/cpuinfo-b"]


def test_install_puts_the_pages_and_the_completion_in_place(tmp_path: Path) -> None:
    make_install(tmp_path, "install-docs", PREFIX="/usr")
    share = tmp_path / "usr/share"
    assert (share / "man/man1/hwcaps-fs.1").read_text() == manpage.hwcaps_fs_1()
    assert (share / "man/man8/mount.hwcaps-fs.8").read_text() == manpage.mount_hwcaps_fs_8()
    assert (share / "man/man8/mount.fuse.hwcaps-fs.8").resolve().name == "mount.hwcaps-fs.8"
    assert (share / "bash-completion/completions/hwcaps-fs").read_text() == completion.script()
