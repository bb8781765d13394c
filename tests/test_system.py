"""The mount table, bind-mount names, the checks before mounting, the handshake and the first
scan's child process (no mount needed)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from hwcaps_fs.core.mount_options import MountOptions
from hwcaps_fs.detect.cpu import DetectOptions
from hwcaps_fs.errors import PathError
from hwcaps_fs.fuse import first_scan as first_scan_module
from hwcaps_fs.fuse.first_scan import ScanAhead, first_scan
from hwcaps_fs.system import handshake
from hwcaps_fs.system.bindmount import runtime_name
from hwcaps_fs.system.mountinfo import MountEntry, parse_mountinfo
from hwcaps_fs.system.preflight import MountConfig, check_paths

MOUNTINFO = """\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
42 22 0:39 / /tmp/with\\040space ro,nosuid,nodev,relatime shared:5 - fuse.hwcaps-fs hwcaps-fs ro
43 42 0:40 / /tmp/with\\040space ro - fuse.hwcaps-fs store ro,user_id=0
"""


def test_parse_mountinfo() -> None:
    assert parse_mountinfo(MOUNTINFO) == [
        MountEntry(22, "252:1", "/", "ext4", "/dev/vda1", frozenset({"rw", "relatime"})),
        MountEntry(42, "0:39", "/tmp/with space", "fuse.hwcaps-fs", "hwcaps-fs",
                   frozenset({"ro", "nosuid", "nodev", "relatime"})),
        MountEntry(43, "0:40", "/tmp/with space", "fuse.hwcaps-fs", "store", frozenset({"ro"})),
    ]


@pytest.mark.parametrize(("path", "name"), [
    ("/usr/bin", "usr-bin"), ("/", "-"), ("/opt/my-app/bin", "opt-my\\x2dapp-bin"),
    ("/a b", "a\\x20b"),
])
def test_runtime_name(path: str, name: str) -> None:
    assert runtime_name(path) == name


def config(root: Path, mountpoint: Path) -> MountConfig:
    return MountConfig(str(root), str(mountpoint), MountOptions(allow_other=False),
                       DetectOptions(), None, foreground=True)


def test_check_paths_refuses_missing_or_odd_paths(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "store/sub").mkdir(parents=True)
    cases = {
        (tmp_path / "missing", tmp_path): "ROOT .*missing: no such directory",
        (tmp_path, tmp_path / "missing"): "MOUNTPOINT .*missing: no such directory",
        (tmp_path / "file", tmp_path): "ROOT .*file: not a directory",
        (tmp_path / "store", tmp_path / "store/sub"): "is inside ROOT",
    }
    for (root, mountpoint), message in cases.items():
        with pytest.raises(PathError, match=message):
            check_paths(config(root, mountpoint))


def test_check_paths_tells_in_place_from_dedicated(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "mnt").mkdir()
    assert check_paths(config(tmp_path / "store", tmp_path / "store")).in_place
    assert check_paths(config(tmp_path / "store", tmp_path)).in_place
    assert not check_paths(config(tmp_path / "store", tmp_path / "mnt")).in_place


def test_handshake_carries_a_word_or_an_exception() -> None:
    for outcome in ("ready", PathError("ROOT /x: no such directory")):
        read_end, write_end = os.pipe()
        handshake.send(write_end, outcome)
        received = handshake.receive(read_end)
        assert type(received) is type(outcome) and str(received) == str(outcome)
    read_end, write_end = os.pipe()
    os.close(write_end)  # the child died before a word
    assert handshake.receive(read_end) is None


def test_handshake_carries_more_than_a_pipe_holds() -> None:
    """A first scan of many names is megabytes: written while the other end reads it."""
    message = [os.urandom(1000) for _ in range(3000)]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        handshake.send(write_end, message)
        os._exit(0)
    os.close(write_end)
    try:
        assert handshake.receive(read_end) == message
    finally:
        os.waitpid(pid, 0)


def many_names(root: Path) -> Path:
    """A store of 300 names, two with a variant."""
    for relpath in [*(f"bin/name{i:03d}" for i in range(300)),
                    "glibc-hwcaps/x86-64-v2/bin/name000", "glibc-hwcaps/x86-64-v2/bin/name001"]:
        path = root / "store" / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    (root / "mnt").mkdir()
    return root


def assert_reaped(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_the_first_scan_comes_from_a_child_as_this_process_would_make_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(first_scan_module, "NAMES_PER_MESSAGE", 64)  # 5 messages, the last short
    paths = check_paths(config(many_names(tmp_path) / "store", tmp_path / "mnt"))
    with ScanAhead(paths) as scan:
        child = scan._child
        received = scan.result()
        own = first_scan(paths, scan.root_fd)
        assert child is not None
        assert_reaped(child)  # by result(), in the process that made it: no zombie meanwhile
    assert received == own
    assert len(received.store.files) == 300
    assert set(received.store.files["bin/name000"]) == {None, "x86-64-v2"}
    foo, bar = (received.store.files[f"bin/name{i:03d}"][None] for i in (100, 200))
    assert foo.mode is bar.mode and foo.dev is bar.dev  # shared again once loaded


def test_a_first_scan_child_that_dies_leaves_the_scan_to_this_process(tmp_path: Path) -> None:
    paths = check_paths(config(many_names(tmp_path) / "store", tmp_path / "mnt"))
    with ScanAhead(paths) as scan:
        assert scan._child is not None
        os.kill(scan._child, signal.SIGKILL)
        assert scan.result() == first_scan(paths, scan.root_fd)


def test_a_mount_that_fails_early_stops_and_reaps_its_scanning_child(tmp_path: Path) -> None:
    paths = check_paths(config(many_names(tmp_path) / "store", tmp_path / "mnt"))
    scan = ScanAhead(paths)
    child = scan._child
    assert child is not None
    scan.close()  # result() never asked: the mount failed before it needed the scan
    assert_reaped(child)
    with pytest.raises(OSError):
        os.fstat(scan.root_fd)


def test_first_scan_refuses_a_root_that_is_gone(tmp_path: Path) -> None:
    paths = check_paths(config(many_names(tmp_path) / "store", tmp_path / "mnt"))
    (tmp_path / "store").rename(tmp_path / "elsewhere")
    with pytest.raises(PathError, match=r"ROOT .*store: No such file or directory"):
        ScanAhead(paths)
