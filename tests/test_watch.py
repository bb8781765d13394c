"""Following the store: inotify event decoding, mapping changes to rescans, real watches, and
backing files that survive a rename over (no mount needed)."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from hwcaps_fs.backing import BackingFiles, ReplacedError, open_beneath
from hwcaps_fs.levels import architecture_named
from hwcaps_fs.store import Layout, scan_fd
from hwcaps_fs.watch import (
    IN_CREATE,
    IN_DELETE_SELF,
    IN_ISDIR,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Change,
    Changes,
    Event,
    Watcher,
    apply_changes,
    changes_of,
    decode_events,
)

X86 = architecture_named("x86_64")


def packed(wd: int, mask: int, name: bytes = b"") -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("=iIII", wd, mask, 0, len(padded)) + padded


def test_decode_events() -> None:
    data = packed(1, IN_MOVED_TO, b"foo") + packed(2, IN_DELETE_SELF) + packed(3, IN_CREATE,
                                                                                b"x" * 16)
    assert decode_events(data) == [Event(1, IN_MOVED_TO, 0, "foo"),
                                   Event(2, IN_DELETE_SELF, 0, ""),
                                   Event(3, IN_CREATE, 0, "x" * 16)]


def test_changes_of_maps_descriptors_to_root_relative_paths() -> None:
    directories = {1: "", 2: "glibc-hwcaps/x86-64-v3/bin"}
    events = [Event(1, IN_CREATE | IN_ISDIR, 0, "sbin"), Event(2, IN_MOVED_TO, 0, "foo"),
              Event(2, IN_DELETE_SELF, 0, ""), Event(9, IN_CREATE, 0, "unknown")]
    assert changes_of(events, directories) == Changes(frozenset({
        Change("sbin", True), Change("glibc-hwcaps/x86-64-v3/bin/foo", False),
        Change("glibc-hwcaps/x86-64-v3/bin", True)}))
    assert changes_of([Event(-1, IN_Q_OVERFLOW, 0, "")], directories).overflow


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/foo").write_text("#!/bin/sh\necho base\n")
    (tmp_path / "bin/foo").chmod(0o755)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield tmp_path, fd
    os.close(fd)


def add_variant(root: Path, level: str, relpath: str) -> Path:
    path = root / "glibc-hwcaps" / level / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho variant\n")
    path.chmod(0o755)
    return path


def test_apply_changes_rescans_what_changed(root: tuple[Path, int]) -> None:
    path, fd = root
    store = scan_fd(fd, str(path), X86, Layout.GLIBC)
    add_variant(path, "x86-64-v2", "bin/foo")
    changed = Changes(frozenset({Change("glibc-hwcaps/x86-64-v2/bin/foo", False)}))
    apply_changes(store, fd, changed)
    assert set(store.files["bin/foo"]) == {None, "x86-64-v2"}

    add_variant(path, "x86-64-v2", "sbin/tool")
    apply_changes(store, fd, Changes(frozenset({Change("glibc-hwcaps/x86-64-v2/sbin", True)})))
    assert "sbin" in store.dirs and "bin/foo" in store.files
    assert set(store.files["sbin/tool"]) == {"x86-64-v2"}

    (path / "bin/foo").unlink()
    apply_changes(store, fd, Changes(frozenset(), overflow=True))
    assert set(store.files["bin/foo"]) == {"x86-64-v2"}


def test_watcher_reports_changes_in_new_and_variant_directories(
        root: tuple[Path, int]) -> None:
    path, fd = root

    async def scenario() -> list[Changes]:
        watcher = Watcher(fd)
        try:
            assert watcher.sync() == []
            seen = []
            (path / "glibc-hwcaps/x86-64-v3/bin").mkdir(parents=True)
            with trio.fail_after(5):
                seen.append(await watcher.next_changes(settle=0.02))
            watcher.sync()
            new = path / "glibc-hwcaps/x86-64-v3/bin/.foo.tmp"
            new.write_text("x")
            new.rename(new.with_name("foo"))
            with trio.fail_after(5):
                seen.append(await watcher.next_changes(settle=0.02))
            return seen
        finally:
            watcher.close()

    first, second = trio.run(scenario)
    assert Change("glibc-hwcaps", True) in first.changes
    assert Change("glibc-hwcaps/x86-64-v3/bin/foo", False) in second.changes


def test_backing_keeps_the_old_file_after_a_rename_over(root: tuple[Path, int]) -> None:
    path, fd = root
    store = scan_fd(fd, str(path), X86, Layout.GLIBC)
    old = store.files["bin/foo"][None]
    backing = BackingFiles(fd)
    try:
        assert backing.pread(7, old, 0, 11) == b"#!/bin/sh\ne"
        replacement = path / "bin/.foo.new"
        replacement.write_text("#!/bin/sh\necho new\n")
        replacement.rename(path / "bin/foo")
        assert backing.pread(7, old, 10, 9) == b"echo base"
        backing.discard([7])
        with pytest.raises(ReplacedError):
            backing.pread(7, old, 0, 1)
    finally:
        backing.close()


def test_open_beneath_refuses_symlinks_and_dotdot(root: tuple[Path, int]) -> None:
    path, fd = root
    (path / "link").symlink_to("bin")
    for bad in ("link/foo", "../etc/passwd", "bin/../bin/foo"):
        with pytest.raises(OSError):
            os.close(open_beneath(fd, bad))
