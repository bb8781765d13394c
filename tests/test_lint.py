"""``check`` on a real store with one of each mistake."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hwcaps_fs.commands.check import Finding, Severity, check
from hwcaps_fs.core.levels import X86_64
from hwcaps_fs.core.resolve import Target
from hwcaps_fs.store.scan import scan
from tests import elf_images as img
from tests.builders import compile_level, install

#: The CPU plays no part in check: a baseline-only target must give the same findings.
TARGETS = (Target(X86_64, (), 0x1, False),
           Target(X86_64, ("x86-64-v4", "x86-64-v3", "x86-64-v2"), 0xF, True))


def findings(root: Path, target: Target) -> set[tuple[Severity, str, str]]:
    return {(f.severity, f.path, f.message) for f in check(scan(str(root), X86_64), target)}


@pytest.mark.parametrize("target", TARGETS)
def test_each_mistake_is_found(tmp_path: Path, binaries: Path, target: Target) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: files owned by anyone else add ownership findings")
    good = compile_level(binaries, "baseline", mark="mneeded")
    install(good, tmp_path / "bin/ok")
    install(compile_level(binaries, "x86-64-v3", mark="mneeded"),
            tmp_path / "glibc-hwcaps/x86-64-v3/bin/ok")
    install(compile_level(binaries, "x86-64-v3", march="x86-64-v4", mark="mneeded"),
            tmp_path / "glibc-hwcaps/x86-64-v3/bin/misplaced")
    install(good, tmp_path / "bin/misplaced")
    install(good, tmp_path / "glibc-hwcaps/x86-64-v2/bin/orphan")
    install(good, tmp_path / "bin/noexec", mode=0o644)
    arm = tmp_path / "bin/arm"
    arm.write_bytes(img.marked(None, img.AARCH64))
    arm.chmod(0o755)
    # A baseline symlink out of ROOT is what the directory holds (awk -> /etc/alternatives/awk)
    # and is served as such; a variant's is an error, a dangling baseline link a warning.
    os.symlink("/etc/alternatives/awk", tmp_path / "bin/awk")
    os.symlink("/etc/passwd", tmp_path / "glibc-hwcaps/x86-64-v3/bin/escape")
    install(good, tmp_path / "bin/escape")
    os.symlink("gone", tmp_path / "bin/dangling")
    (tmp_path / "glibc-hwcaps/power10").mkdir()
    install(good, tmp_path / "bin/groupw", mode=0o775)
    got = findings(tmp_path, target)
    error, warning = Severity.ERROR, Severity.WARNING
    assert got == {
        (error, "glibc-hwcaps/x86-64-v3/bin/misplaced",
         "ISA note 0xf needs x86-64-v4, more than x86-64-v3: CPUs at x86-64-v3 will not run it"),
        (error, "glibc-hwcaps/x86-64-v2/bin/orphan",
         "no baseline for bin/orphan (only x86-64-v2): CPUs below those levels will not see it"),
        (error, "bin/noexec", "not executable (mode 0644)"),
        (error, "bin/arm", "built for aarch64 (e_machine 183), this is x86_64"),
        (error, "glibc-hwcaps/x86-64-v3/bin/escape",
         "symlink leaves " + str(tmp_path) + " (-> /etc/passwd)"),
        (warning, "bin/dangling",
         "dangling symlink: bin/gone does not exist (served as the same symlink)"),
        (warning, "", "ignored glibc-hwcaps/power10: a level of ppc64le, this store serves x86_64"),
        (warning, "bin/groupw",
         "writable by group or others (mode 0775) (refused when serving root)"),
    }


def test_errors_come_first_and_print_as_one_line(tmp_path: Path, binaries: Path) -> None:
    install(compile_level(binaries, "baseline"), tmp_path / "bin/noexec", mode=0o664)
    (tmp_path / "glibc-hwcaps/z15").mkdir(parents=True)
    result = check(scan(str(tmp_path), X86_64), TARGETS[0])
    assert [f.severity for f in result] == [Severity.ERROR, Severity.WARNING, Severity.WARNING]
    assert str(result[0]) == "error: bin/noexec: not executable (mode 0664)"
    assert str(Finding(Severity.WARNING, "", "x")) == "warning: x"


def test_clean_store_has_no_findings(tmp_path: Path, binaries: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a clean store must be root-owned")
    os.chown(tmp_path, 0, 0)
    tmp_path.chmod(0o755)
    install(compile_level(binaries, "baseline", mark="mneeded"), tmp_path / "bin/ok")
    install(compile_level(binaries, "x86-64-v4", mark="z"),
            tmp_path / "glibc-hwcaps/x86-64-v4/bin/ok")
    assert check(scan(str(tmp_path), X86_64), TARGETS[0]) == []
