"""Backing files: the old file survives a rename over; opens beneath ROOT refuse symlinks and
``..`` (no mount needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hwcaps_fs.core.levels import X86_64
from hwcaps_fs.core.model import Layout
from hwcaps_fs.fuse.backing import BackingFiles, ReplacedError
from hwcaps_fs.store.fds import open_beneath
from hwcaps_fs.store.scan import scan_fd


def test_backing_keeps_the_old_file_after_a_rename_over(store_fd: tuple[Path, int]) -> None:
    path, fd = store_fd
    store = scan_fd(fd, str(path), X86_64, Layout.GLIBC)
    old = store.files["bin/foo"][None]
    backing = BackingFiles(fd, 8)
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


def test_open_beneath_refuses_symlinks_and_dotdot(store_fd: tuple[Path, int]) -> None:
    path, fd = store_fd
    (path / "link").symlink_to("bin")
    for bad in ("link/foo", "../etc/passwd", "bin/../bin/foo"):
        with pytest.raises(OSError):
            os.close(open_beneath(fd, bad))
