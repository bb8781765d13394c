"""Checks before mounting: the paths of a mount, checked against the file system.

Paths are canonical, so one place has one name whatever way it is given. A view is never
mounted on a view, and two mounts of one place racing cannot both pass that check: it is made,
and the mount done, holding :class:`MountLock`. A stale mount (a dead daemon: ENOTCONN) is
detached on the way, so a restart heals it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
from dataclasses import dataclass

from hwcaps_fs.core.model import Layout
from hwcaps_fs.core.mount_options import MountOptions
from hwcaps_fs.core.view import Presentation
from hwcaps_fs.detect.cpu import DetectOptions
from hwcaps_fs.errors import MountError, PathError
from hwcaps_fs.store.files import untrusted_path
from hwcaps_fs.system.bindmount import RUNTIME_DIR, runtime_name
from hwcaps_fs.system.mountinfo import mounts_at
from hwcaps_fs.system.namespaces import detach, make_directory

log = logging.getLogger(__name__)

#: The errno values of a FUSE mount whose daemon is gone.
STALE_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNABORTED})

#: The lock files that keep two mounts of one mountpoint apart (one per mountpoint).
LOCK_DIR = os.path.join(RUNTIME_DIR, "locks")


@dataclass(frozen=True)
class MountConfig:
    """Everything ``hwcaps-fs mount`` was asked. ``layout`` None: detected from ROOT."""

    root: str
    mountpoint: str
    options: MountOptions
    detect_options: DetectOptions
    layout: Layout | None
    foreground: bool


@dataclass(frozen=True)
class MountPaths:
    """The checked paths of a mount: canonical ``mountpoint`` and ``root``;
    ``in_place`` when ROOT is the mountpoint or below it (it is then only reachable through
    a bind mount once mounted)."""

    config: MountConfig
    mountpoint: str
    root: str
    in_place: bool


def canonical(path: str, role: str) -> str:
    """``path`` absolute, without symlinks, ``.``, ``..`` or doubled slashes, so that one
    place has one name (for the already-mounted check, umount and the bind mount's name).
    An empty path is refused: it would mean the working directory, ``/`` for a unit."""
    if not path:
        raise PathError(f"{role}: empty path")
    return os.path.realpath(path)


def check_paths(config: MountConfig) -> MountPaths:
    """Check ``config`` against the file system, clearing a stale mount on the way (hold
    :class:`MountLock` from here until mounted)."""
    mountpoint = canonical(config.mountpoint, "MOUNTPOINT")
    root = canonical(config.root, "ROOT")
    _clear_stale_mount(mountpoint)
    on_top = mounts_at(mountpoint)
    if on_top and on_top[-1].is_view:
        raise MountError(f"{mountpoint}: already mounted (hwcaps-fs umount {mountpoint})")
    _directory(mountpoint, "MOUNTPOINT")
    _directory(root, "ROOT")
    if root != mountpoint and mountpoint.startswith(root.rstrip("/") + "/"):
        raise PathError(f"MOUNTPOINT {mountpoint} is inside ROOT {root}: the daemon would "
                        "scan its own mount")
    if config.options.loader_links is not None:
        check_loader_links(config.options.loader_links, config.options.serves_root())
    in_place = root == mountpoint or root.startswith(mountpoint.rstrip("/") + "/")
    if not in_place and config.options.serves_root():
        check_mountpoint(mountpoint)
    if in_place and os.geteuid() != 0 and config.options.presentation is Presentation.SYMLINKS:
        raise MountError("presentation=symlinks over ROOT itself needs root (a private bind "
                         "mount of ROOT is what the symlinks point into)")
    return MountPaths(config, mountpoint, root, in_place)


def _directory(path: str, role: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise PathError(f"{role} {path}: no such directory") from None
    except OSError as exc:
        raise PathError(f"{role} {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PathError(f"{role} {path}: not a directory")
    return st


def check_loader_links(directory: str, serves_root: bool) -> None:
    """``loader_links=DIR`` must be a directory and, when root may run what the view serves,
    one that only root can change, like the way to it (every directory and symlink on it,
    :func:`~hwcaps_fs.store.files.untrusted_path`): the view's links send every exec of a
    loader-linked name there."""
    _directory(directory, "loader_links")
    reason = untrusted_path(directory) if serves_root else None
    if reason is not None:
        raise PathError(f"loader_links {directory}: {reason}, and root would run what they "
                        "put there")


def check_mountpoint(mountpoint: str) -> None:
    """A view served to root must sit where only root can change what is below it: when the
    view goes (unmounted, or its daemon ends and ``auto_unmount`` takes it away), every path
    into it (a ``loader_links`` DIR, a PATH entry) leads into the plain directory again, and
    a user who could write there would have root run what they put there (``run``'s symlink
    view, written into the directory when no namespace can be had, would be theirs to
    repoint even while it is there)."""
    reason = untrusted_path(mountpoint)
    if reason is not None:
        raise PathError(f"MOUNTPOINT {mountpoint}: {reason}, and once the view is gone root "
                        "would find what they put there (mount it where only root can write)")


def _clear_stale_mount(mountpoint: str) -> None:
    """Detach a dead FUSE mount at ``mountpoint`` (its daemon died without auto_unmount)."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        if exc.errno in STALE_ERRNOS and any(entry.is_view for entry in mounts_at(mountpoint)):
            log.warning("%s: clearing a stale mount (%s)", mountpoint, exc.strerror)
            detach(mountpoint)


class MountLock:
    """Held from the check that no view is at a mountpoint until ours is there (or failed), so
    that two mounts of one place never both pass the check. A lock file per canonical
    mountpoint under :data:`LOCK_DIR`, removed by whoever holds it when done (a waiter that
    then finds its file gone tries again). Only root has one: other users' mounts are their
    own (no allow_other) and /run is not theirs."""

    def __init__(self, mountpoint: str) -> None:
        self.fd: int | None = None
        if os.geteuid() != 0:
            return
        self.path = os.path.join(LOCK_DIR, runtime_name(mountpoint))
        try:
            make_directory(RUNTIME_DIR, 0o755, exist_ok=True)
            make_directory(LOCK_DIR, 0o700, exist_ok=True)
            self._take()
        except OSError as exc:  # a full or read-only /run
            raise MountError(f"cannot take the lock {self.path}: {exc.strerror}") from None

    def _take(self) -> None:
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, self.path):
                self.fd = fd
            else:
                os.close(fd)

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.forget()

    def forget(self) -> None:
        """Close this process's copy without unlocking (in the daemon a background mount
        forks: the waiting parent holds the lock until the mount is there)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)
