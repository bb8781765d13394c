"""Checks before mounting: the paths of a mount, checked against the file system.

A stale mount (a dead daemon: ENOTCONN) is detached on the way, so a restart heals it.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass

from hwcaps_fs.core.model import Layout
from hwcaps_fs.core.mount_options import MountOptions
from hwcaps_fs.core.view import Presentation
from hwcaps_fs.detect.cpu import DetectOptions
from hwcaps_fs.errors import MountError, PathError
from hwcaps_fs.system.mountinfo import mounts_at
from hwcaps_fs.system.namespaces import detach

log = logging.getLogger(__name__)

#: The errno values of a FUSE mount whose daemon is gone.
STALE_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNABORTED})


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
    """The checked paths of a mount: absolute ``mountpoint`` as given, canonical ``root``;
    ``in_place`` when ROOT is the mountpoint or below it (it is then only reachable through
    a bind mount once mounted)."""

    config: MountConfig
    mountpoint: str
    root: str
    in_place: bool


def check_paths(config: MountConfig) -> MountPaths:
    """Check ``config`` against the file system, clearing a stale mount on the way."""
    mountpoint = os.path.abspath(config.mountpoint)
    _clear_stale_mount(mountpoint)
    fstype = f"fuse.{config.options.subtype}"
    on_top = mounts_at(mountpoint)
    if on_top and on_top[-1].fstype == fstype:
        raise MountError(f"{mountpoint}: already mounted (hwcaps-fs umount {mountpoint})")
    _directory(mountpoint, "MOUNTPOINT")
    _directory(config.root, "ROOT")
    root, target = os.path.realpath(config.root), os.path.realpath(mountpoint)
    if root != target and target.startswith(root.rstrip("/") + "/"):
        raise PathError(f"MOUNTPOINT {mountpoint} is inside ROOT {root}: the daemon would "
                        "scan its own mount")
    in_place = root == target or root.startswith(target.rstrip("/") + "/")
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


def _clear_stale_mount(mountpoint: str) -> None:
    """Detach a dead FUSE mount at ``mountpoint`` (its daemon died without auto_unmount)."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        if exc.errno in STALE_ERRNOS and any(entry.is_fuse for entry in mounts_at(mountpoint)):
            log.warning("%s: clearing a stale mount (%s)", mountpoint, exc.strerror)
            detach(mountpoint)
