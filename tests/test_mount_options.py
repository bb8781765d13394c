"""``-o`` parsing: ours, FUSE's, and the words mount(8) and mount.fuse3 add."""

from __future__ import annotations

import pytest

from hwcaps_fs.core.model import Layout
from hwcaps_fs.core.mount_options import MountOptions, parse_mount_options
from hwcaps_fs.core.view import Presentation
from hwcaps_fs.errors import UsageError


def test_defaults_depend_on_root() -> None:
    assert parse_mount_options([], is_root=True) == MountOptions(allow_other=True)
    assert parse_mount_options([], is_root=False) == MountOptions(allow_other=False)


def test_the_mount_is_always_read_only_nosuid_nodev() -> None:
    options = parse_mount_options(["rw,suid,dev,exec"], is_root=True)
    assert {"ro", "nosuid", "nodev", "default_permissions", "allow_other"} <= (
        options.fuse_options())
    assert not {"rw", "suid", "dev"} & options.fuse_options()


def test_what_mount_fuse3_and_fstab_pass_is_accepted() -> None:
    words = ("ro,rw,dev,nodev,suid,nosuid,exec,atime,noatime,relatime,defaults,_netdev,"
             "x-systemd.automount,x-systemd.mount-timeout=30,nofail,auto,noauto,user,nouser")
    assert parse_mount_options([words], is_root=False) == MountOptions(allow_other=False)


def test_ours_and_fuse_options() -> None:
    options = parse_mount_options(
        ["level=x86-64-v2,layout=loader", "presentation=files,xattr=off",
         "auto_unmount,debug,noexec,fsname=store,subtype=hwcaps-fs.hw"], is_root=False)
    assert options == MountOptions(
        allow_other=False, auto_unmount=True, noexec=True, debug=True, fsname="store",
        subtype="hwcaps-fs.hw", level="x86-64-v2", layout=Layout.LOADER,
        presentation=Presentation.FILES, xattr=False)
    assert parse_mount_options(["presentation=symlinks"], is_root=False).presentation is (
        Presentation.SYMLINKS)
    assert {"auto_unmount", "debug", "noexec", "fsname=store", "subtype=hwcaps-fs.hw"} <= (
        options.fuse_options())


def test_later_words_win() -> None:
    assert not parse_mount_options(["noexec", "exec"], is_root=True).noexec
    assert parse_mount_options(["xattr=off,xattr=on"], is_root=True).xattr


@pytest.mark.parametrize(("text", "message"), [
    ("foo", "unknown mount option 'foo'"),
    ("level", "unknown mount option 'level'"),
    ("fsname=", "unknown mount option 'fsname='"),
    ("presentation=hardlinks", "presentation=hardlinks: expected files|symlinks"),
    ("layout=debian", "layout=debian: expected glibc|loader"),
    ("xattr=maybe", "xattr=maybe: expected on|off"),
    ("subtype=sshfs", "subtype=sshfs: must be hwcaps-fs or begin with hwcaps-fs."),
    ("noexec,presentation=symlinks", "noexec with presentation=symlinks: a symlink cannot make "
                                     "anything non-executable"),
])
def test_bad_options_are_one_line_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_mount_options(["ro", text], is_root=True)
