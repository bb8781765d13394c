"""Descriptors beneath the ROOT directory fd: every way the store on disk is opened or listed.

Nothing here resolves a path from ``/``: ROOT may be the mountpoint of our own view, and a path
looked up through it would ask the daemon, which is busy looking it up (a deadlock beyond
``kill -9``). Directories are opened one component at a time from the ROOT fd, never following a
symlink (the scan follows the ones that stay inside ROOT itself, :mod:`hwcaps_fs.store.scan`).
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Iterator

#: How candidates are opened: never follow a symlink the scan has not vetted, never block on
#: a FIFO that slipped in between the stat and the open.
OPEN_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
OPEN_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir_beneath(root_fd: int, reldir: str) -> int:
    """Open the directory ``reldir`` (ROOT-relative, already free of symlinks; "" is ROOT)
    from ``root_fd``, refusing symlinks and ``..`` at every step."""
    parts = reldir.split("/") if reldir else []
    if any(part in ("", ".", "..") for part in parts):
        raise OSError(errno.EINVAL, f"not a directory inside the store: {reldir}")
    fd = os.open(".", OPEN_DIR_FLAGS, dir_fd=root_fd)
    for part in parts:
        try:
            sub = os.open(part, OPEN_DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = sub
    return fd


def open_beneath(root_fd: int, relpath: str, directories: dict[str, int] | None = None) -> int:
    """Open ``relpath`` (ROOT-relative, already free of symlinks) read-only from ``root_fd``,
    refusing symlinks and ``..`` at every step. With ``directories`` (ROOT-relative path →
    fd, the caller's to close), the directory is taken from there or opened into it: many
    files of one directory are opened with one open each."""
    reldir, name = posixpath.split(relpath)
    if name in ("", ".", ".."):
        raise OSError(errno.EINVAL, f"not a path inside the store: {relpath}")
    if directories is not None:
        dir_fd = directories.get(reldir)
        if dir_fd is None:
            dir_fd = directories[reldir] = open_dir_beneath(root_fd, reldir)
        return os.open(name, OPEN_FILE_FLAGS, dir_fd=dir_fd)
    dir_fd = open_dir_beneath(root_fd, reldir)
    try:
        return os.open(name, OPEN_FILE_FLAGS, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def list_dir(fd: int) -> Iterator[tuple[str, bool]]:
    """(name, is a real directory) of the entries of the directory open as ``fd``.

    Lists through a fresh fd: ``scandir`` on a shared fd would move its offset for everyone.
    """
    own = os.open(".", OPEN_DIR_FLAGS, dir_fd=fd)
    try:
        with os.scandir(own) as entries:
            for entry in entries:
                yield entry.name, entry.is_dir(follow_symlinks=False)
    finally:
        os.close(own)
