"""The private read-only bind mount through which an in-place view reaches its real files.

Privileged programs are symlinks to the real file (see :mod:`hwcaps_fs.core.view`). When ROOT
is the mountpoint, the real files are only reachable through a bind mount of the underlying
directory, made under :data:`RUNTIME_DIR` before mounting. It keeps setuid (only the FUSE mount
is nosuid) unless the directory's own mount is nosuid: it carries every restriction of that
mount. It is made private, or the FUSE mount would propagate onto it.

It is also a mount systemd sees: it makes a unit of it (``run-hwcaps\\x2dfs-<name>.mount``)
and unmounts it at shutdown. The units shipped for /usr/bin are ordered after that unit; an
instance of the ``hwcaps-fs@.service`` template cannot name it (no specifier gives the escaped
path of the bind mount), so there systemd may unmount it while the daemon still serves, or
try to after the daemon removed it (its umount fails, it sees the mount gone and goes on).
The daemon removes what is left, and what is already gone is no error.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os

from hwcaps_fs.errors import MountError
from hwcaps_fs.system.mountinfo import mounts_at, restrictions
from hwcaps_fs.system.namespaces import (
    MNT_DETACH,
    MS_BIND,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REMOUNT,
    make_directory,
)
from hwcaps_fs.system.namespaces import mount as sys_mount
from hwcaps_fs.system.namespaces import umount as sys_umount

log = logging.getLogger(__name__)

#: Where the private bind mounts of in-place mounts live (one per mountpoint).
RUNTIME_DIR = "/run/hwcaps-fs"

#: The longest file name (bytes) in the runtime directory.
NAME_MAX = 255


def runtime_name(mountpoint: str) -> str:
    """A file name for ``mountpoint``, as systemd-escape --path writes it (``/usr/bin`` is
    ``usr-bin``), so that each mountpoint has its own bind mount and a restart finds it. An
    escaped path longer than a file name may be keeps its start and ends in a hash of the
    whole path instead."""
    path = os.fsencode(mountpoint.strip("/"))
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_."
    escaped = "".join("-" if byte == ord("/") else chr(byte) if byte in safe
                      else f"\\x{byte:02x}" for byte in path)
    if len(escaped) > NAME_MAX:
        digest = hashlib.sha256(path).hexdigest()[:32]
        escaped = f"{escaped[:NAME_MAX - len(digest) - 1]}-{digest}"
    return escaped or "-"


def bind_underlying(root_fd: int, mountpoint: str) -> str:
    """Bind-mount the directory open as ``root_fd`` read-only at ``RUNTIME_DIR/<name>``, with
    every restriction of the mount it comes from (setuid programs run from it, unless their
    file system is nosuid: then they must stay powerless here too), private so the FUSE mount
    does not propagate onto it; a leftover from a daemon that was killed is detached first.
    Returns its path. Directories get their mode whatever the umask: every user reaches
    sudo through them. What fails (a full /run...) is a :class:`MountError`."""
    target = os.path.join(RUNTIME_DIR, runtime_name(mountpoint))
    try:
        make_directory(RUNTIME_DIR, 0o755, exist_ok=True)
        make_directory(target, 0o755, exist_ok=True)
        for _ in mounts_at(target):
            sys_umount(target, MNT_DETACH)
        sys_mount(f"/proc/self/fd/{root_fd}", target, None, MS_BIND)
    except OSError as exc:
        raise MountError(f"cannot make the bind mount {target} that privileged programs are "
                         f"served from: {exc.strerror}") from None
    try:
        sys_mount(None, target, None, MS_PRIVATE)
        # A bind remount sets the flags it is given and clears the others.
        sys_mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | restrictions(root_fd))
    except OSError as exc:
        sys_umount(target, MNT_DETACH)
        raise MountError(f"cannot make the bind mount {target} private and read-only: "
                         f"{exc.strerror}") from None
    return target


def unbind(target: str) -> None:
    """Remove the bind mount at ``target`` and its directory as the daemon ends. What is
    already gone is no error (systemd, or an administrator, may have unmounted it: umount2
    then says EINVAL, not a mount point); what stays, a mount or the directory, is said."""
    try:
        for _ in mounts_at(target):
            try:
                sys_umount(target, MNT_DETACH)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        os.rmdir(target)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove the bind mount %s: %s", target, exc.strerror)
