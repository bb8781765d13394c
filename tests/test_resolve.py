"""Resolution on real stores of gcc-built variants (each prints the level it was built for)."""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path

import pytest

from hwcaps_fs.core.levels import PPC64LE, S390X, X86_64
from hwcaps_fs.core.resolve import (
    Resolution,
    Target,
    resolve,
    resolve_store,
)
from hwcaps_fs.store.scan import scan
from tests import elf_images as img
from tests.builders import compile_level, install, variant_store

LEVELS = ("x86-64-v2", "x86-64-v3", "x86-64-v4")


def target(level: str | None, require_trusted: bool = False) -> Target:
    """A CPU whose highest level is ``level`` (None = baseline only)."""
    rank = 0 if level is None else X86_64.rank(level)
    active = tuple(reversed(X86_64.level_names[:rank]))
    return Target(X86_64, active, X86_64.isa_bits(level or "baseline"), require_trusted, active)


def resolved(root: Path, tgt: Target, relpath: str = "bin/prog") -> Resolution:
    return resolve_store(scan(str(root), X86_64), tgt)[relpath]


@functools.cache
def host_isa_bits() -> int:
    """The ISA_1 bits of this machine as glibc sees them (0 when ld.so will not say)."""
    try:
        out = subprocess.run([X86_64.loaders[0], "--list-diagnostics"], capture_output=True,
                             text=True, check=False).stdout
    except OSError:
        return 0
    found = re.search(r"^x86\.cpu_features\.isa_1=(0x[0-9a-f]+)$", out, re.MULTILINE)
    return int(found.group(1), 16) if found else 0


def runs(root: Path, resolution: Resolution) -> str:
    """What the served program prints (the test is skipped when this CPU cannot run it)."""
    assert resolution.served is not None
    elf = resolution.served.elf
    if elf is not None and elf.isa_needed is not None and elf.isa_needed & ~host_isa_bits():
        pytest.skip(f"this CPU cannot run a program with ISA note {elf.isa_needed:#x}")
    out = subprocess.run([str(root / resolution.served.source)], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def test_levels_helpers() -> None:
    assert X86_64.isa_bits(None) == 0
    assert X86_64.isa_bits("baseline") == 0x1
    assert X86_64.isa_bits("x86-64-v3") == 0x7
    assert S390X.isa_bits("z15") is None
    assert X86_64.isa_level_name(0x5) == "x86-64-v3"
    assert X86_64.isa_level_name(0x10) == "unknown ISA bits 0x10"
    assert [f.name for f in PPC64LE.features_up_to("power9")] == ["arch_3_00", "ieee128"]


@pytest.mark.parametrize("cpu", [None, *LEVELS])
def test_highest_supported_wins(tmp_path: Path, binaries: Path, cpu: str | None) -> None:
    variant_store(binaries, tmp_path, "bin/prog")
    res = resolved(tmp_path, target(cpu))
    assert res.served is not None and res.served.level == cpu
    above = [skip.candidate.level for skip in res.skipped]
    assert above == [lvl for lvl in reversed(LEVELS) if cpu is None or lvl > cpu]
    assert runs(tmp_path, res) == (cpu or "baseline")


def test_v3_cpu_explains_skipped_v4(tmp_path: Path, binaries: Path) -> None:
    variant_store(binaries, tmp_path, "bin/prog")
    res = resolved(tmp_path, target("x86-64-v3"))
    assert [s.reason for s in res.skipped] == [
        "level x86-64-v4 not supported by this CPU (it supports up to x86-64-v3)"]


def test_a_capped_level_is_not_called_unsupported(tmp_path: Path, binaries: Path) -> None:
    variant_store(binaries, tmp_path, "bin/prog")
    capped = Target(X86_64, ("x86-64-v2",), 0xF, False, ("x86-64-v4", "x86-64-v3", "x86-64-v2"),
                    "--level")
    res = resolved(tmp_path, capped)
    assert [s.reason for s in res.skipped] == [
        "level x86-64-v4 not searched: capped at x86-64-v2 by --level, "
        "though this CPU supports it",
        "level x86-64-v3 not searched: capped at x86-64-v2 by --level, "
        "though this CPU supports it"]


def test_v4_binary_misplaced_under_v3(tmp_path: Path, binaries: Path) -> None:
    install(compile_level(binaries, "baseline", mark="mneeded"), tmp_path / "bin/prog")
    install(compile_level(binaries, "x86-64-v3", text="v4 really", mark="mneeded",
                          march="x86-64-v4"), tmp_path / "glibc-hwcaps/x86-64-v3/bin/prog")
    res = resolved(tmp_path, target("x86-64-v3"))
    assert res.served is not None and res.served.level is None
    assert [s.reason for s in res.skipped] == [
        "needs x86-64-v4 (ISA note 0xf) but this CPU supports up to x86-64-v3"]
    # A v4 CPU runs it from the v3 directory, as glibc would.
    assert runs(tmp_path, resolved(tmp_path, target("x86-64-v4"))) == "v4 really"


def test_isa_note_ignored_without_isa_bits(tmp_path: Path, binaries: Path) -> None:
    install(compile_level(binaries, "x86-64-v3", march="x86-64-v4", mark="mneeded"),
            tmp_path / "glibc-hwcaps/x86-64-v3/bin/prog")
    tgt = Target(X86_64, ("x86-64-v3", "x86-64-v2"), None, False)
    res = resolved(tmp_path, tgt)
    assert res.served is not None and res.served.level == "x86-64-v3"


def test_wrong_machine_skipped(tmp_path: Path, binaries: Path) -> None:
    install(compile_level(binaries, "baseline"), tmp_path / "bin/prog")
    for level, image in (("x86-64-v2", img.marked(None, img.AARCH64)),
                         ("x86-64-v3", img.marked(None, img.I386)),
                         ("x86-64-v4", img.marked(None, (62, 32, True)))):
        path = tmp_path / f"glibc-hwcaps/{level}/bin/prog"
        path.parent.mkdir(parents=True)
        path.write_bytes(image)
        path.chmod(0o755)
    res = resolved(tmp_path, target("x86-64-v4"))
    assert res.served is not None and res.served.level is None
    assert [s.reason for s in res.skipped] == [
        "a 32-bit ELF file, this is x86_64 (64-bit)",
        "built for i686 (e_machine 3), this is x86_64",
        "built for aarch64 (e_machine 183), this is x86_64",
    ]


def test_non_executable_and_scripts(tmp_path: Path, binaries: Path) -> None:
    install(compile_level(binaries, "baseline"), tmp_path / "bin/prog")
    install(compile_level(binaries, "x86-64-v3"), tmp_path / "glibc-hwcaps/x86-64-v3/bin/prog",
            mode=0o644)
    script = tmp_path / "glibc-hwcaps/x86-64-v2/bin/prog"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\necho script\n")
    script.chmod(0o755)
    res = resolved(tmp_path, target("x86-64-v3"))
    assert res.served is not None and res.served.level == "x86-64-v2"
    assert [s.reason for s in res.skipped] == ["not executable (mode 0644)"]
    assert runs(tmp_path, res) == "script"


def test_baseline_is_served_as_it_is(tmp_path: Path, binaries: Path) -> None:
    """The baseline is what the directory holds without hwcaps-fs: not runnable here is not a
    reason to hide it (an in-place view must not lose names); variants must be runnable."""
    data = tmp_path / "bin/prog"
    data.parent.mkdir()
    data.write_bytes(img.marked(0xF, img.AARCH64))
    data.chmod(0o644)
    res = resolved(tmp_path, target("x86-64-v3"))
    assert res.served is not None and res.served.level is None
    assert res.skipped == ()


def test_baseline_symlink_out_of_root_is_served_as_is(tmp_path: Path, binaries: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/awk").symlink_to("/etc/alternatives/awk")
    variant = tmp_path / "glibc-hwcaps/x86-64-v2/bin/awk"
    variant.parent.mkdir(parents=True)
    variant.symlink_to("/usr/bin/true")
    res = resolved(tmp_path, target("x86-64-v3", require_trusted=True), "bin/awk")
    assert res.served is not None and res.served.level is None
    assert res.served.unfollowed_link and res.served.link_target == "/etc/alternatives/awk"
    assert [s.reason for s in res.skipped] == [
        f"symlink leaves {tmp_path} (-> /usr/bin/true)"]


def test_untrusted_baseline_refused(tmp_path: Path, binaries: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown test files")
    tmp_path.chmod(0o755)
    install(compile_level(binaries, "baseline"), tmp_path / "bin/prog", mode=0o775)
    res = resolved(tmp_path, target("x86-64-v3", require_trusted=True))
    assert res.served is None
    assert [s.reason for s in res.skipped] == ["writable by group or others (mode 0775)"]


def test_scan_problem_skipped_and_nothing_usable(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    os.mkfifo(tmp_path / "bin/prog")
    res = resolved(tmp_path, target("x86-64-v4"))
    assert res.served is None
    assert [s.reason for s in res.skipped] == ["a FIFO, not a regular file"]


def test_untrusted_refused_only_when_required(tmp_path: Path, binaries: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown test files")
    os.chown(tmp_path, 0, 0)
    tmp_path.chmod(0o755)
    variant_store(binaries, tmp_path, "bin/prog")
    os.chown(tmp_path / "glibc-hwcaps/x86-64-v4/bin/prog", 1000, 1000)
    (tmp_path / "glibc-hwcaps/x86-64-v3/bin/prog").chmod(0o775)
    (tmp_path / "glibc-hwcaps/x86-64-v2").chmod(0o777)
    relaxed = resolved(tmp_path, target("x86-64-v4"))
    assert relaxed.served is not None and relaxed.served.level == "x86-64-v4"
    strict = resolved(tmp_path, target("x86-64-v4", require_trusted=True))
    assert strict.served is not None and strict.served.level is None
    assert [s.reason for s in strict.skipped] == [
        "owned by uid 1000, not root",
        "writable by group or others (mode 0775)",
        "directory glibc-hwcaps/x86-64-v2 is writable by a non-root user",
    ]


def test_absent_name_and_unknown_path() -> None:
    res = resolve("bin/none", {}, target("x86-64-v3"))
    assert res == Resolution("bin/none", None, ())
