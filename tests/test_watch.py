"""Following the store: inotify event decoding, mapping changes to rescans, real watches (no
mount needed)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import trio

from hwcaps_fs.core.levels import X86_64
from hwcaps_fs.core.model import Layout
from hwcaps_fs.store.scan import scan_fd
from hwcaps_fs.store.watch import (
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
    merged,
)


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


def test_changes_of_reads_merged_are_those_of_all_their_events() -> None:
    directories = {1: "", 2: "bin"}
    reads = [[Event(1, IN_CREATE, 0, "foo"), Event(2, IN_MOVED_TO, 0, "bar")],
             [Event(-1, IN_Q_OVERFLOW, 0, ""), Event(2, IN_MOVED_TO, 0, "bar")],
             [Event(1, IN_DELETE_SELF, 0, "")], []]
    batches = [changes_of(events, directories) for events in reads]
    everything = changes_of([event for events in reads for event in events], directories)
    assert merged(batches) == everything
    assert everything.overflow and everything.root_moved and len(everything.changes) == 3
    assert merged(batches[3:]) == Changes(frozenset())


def add_variant(root: Path, level: str, relpath: str) -> Path:
    path = root / "glibc-hwcaps" / level / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho variant\n")
    path.chmod(0o755)
    return path


def test_apply_changes_rescans_what_changed(store_fd: tuple[Path, int]) -> None:
    path, fd = store_fd
    store = scan_fd(fd, str(path), X86_64, Layout.GLIBC)
    add_variant(path, "x86-64-v2", "bin/foo")
    changed = Changes(frozenset({Change("glibc-hwcaps/x86-64-v2/bin/foo", False)}))
    apply_changes(store, fd, changed, ())
    assert set(store.files["bin/foo"]) == {None, "x86-64-v2"}

    add_variant(path, "x86-64-v2", "sbin/tool")
    apply_changes(store, fd, Changes(frozenset({Change("glibc-hwcaps/x86-64-v2/sbin", True)})), ())
    assert "sbin" in store.dirs and "bin/foo" in store.files
    assert set(store.files["sbin/tool"]) == {"x86-64-v2"}

    (path / "bin/foo").unlink()
    apply_changes(store, fd, Changes(frozenset(), overflow=True), ())
    assert set(store.files["bin/foo"]) == {"x86-64-v2"}


def test_watcher_reports_changes_in_new_and_variant_directories(
        store_fd: tuple[Path, int]) -> None:
    path, fd = store_fd

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


def test_a_batch_is_what_was_noticed_of_each_read(store_fd: tuple[Path, int]) -> None:
    """``noticed`` hears each read's changes as they come; the batch is all of them."""
    path, fd = store_fd

    async def scenario() -> tuple[list[Changes], Changes]:
        watcher = Watcher(fd)
        noticed: list[Changes] = []
        try:
            assert watcher.sync() == []

            async def burst() -> None:
                for name in ("a", "b", "c"):
                    (path / "bin" / name).write_text("x")
                    await trio.sleep(0.01)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(burst)
                with trio.fail_after(5):
                    batch = await watcher.next_changes(settle=0.2, noticed=noticed.append)
            return noticed, batch
        finally:
            watcher.close()

    noticed, batch = trio.run(scenario)
    assert noticed and merged(noticed) == batch
    assert {Change(f"bin/{name}", False) for name in "abc"} <= batch.changes


def test_a_sync_below_changed_directories_follows_them_as_a_full_one(
        store_fd: tuple[Path, int]) -> None:
    """Watches synced only below the directories that changed (a subtree made, one moved,
    one removed) report the changes in them under their new paths, as a full sync would."""
    path, fd = store_fd
    (path / "glibc-hwcaps/x86-64-v2/old/deep").mkdir(parents=True)
    (path / "gone/sub").mkdir(parents=True)

    async def scenario() -> list[Changes]:
        watcher = Watcher(fd)
        try:
            assert watcher.sync() == []
            (path / "made/a/b").mkdir(parents=True)
            (path / "glibc-hwcaps/x86-64-v2/old").rename(path / "glibc-hwcaps/x86-64-v2/new")
            shutil.rmtree(path / "gone")
            with trio.fail_after(5):
                changed = await watcher.next_changes(settle=0.05)
            assert watcher.sync(change.path for change in changed.changes
                                if change.is_dir) == []
            for made in ("made/a/b/f", "glibc-hwcaps/x86-64-v2/new/deep/f"):
                (path / made).write_text("x")
            seen = []
            with trio.fail_after(5):
                seen.append(await watcher.next_changes(settle=0.05))
            return seen
        finally:
            watcher.close()

    [after] = trio.run(scenario)
    assert {change.path for change in after.changes} == {
        "made/a/b/f", "glibc-hwcaps/x86-64-v2/new/deep/f"}
