"""The mount table, bind-mount names, the checks before mounting and the handshake (no mount
needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hwcaps_fs.core.mount_options import MountOptions
from hwcaps_fs.detect.cpu import DetectOptions
from hwcaps_fs.errors import PathError
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
