"""Linux process plumbing: namespaces, mount(2), umount2(2), parent-death signals.

Python 3.11 has neither ``os.unshare`` (3.12) nor mount(2) nor prctl(2), so these go through
:mod:`hwcaps_fs.system.libc`. Each wrapper raises :class:`OSError` with the errno, as ``os``
functions do, so callers can tell "not permitted here" (a fallback) from a real failure.
"""

from __future__ import annotations

import enum
import errno
import os
import subprocess

from hwcaps_fs.errors import MountError
from hwcaps_fs.system.libc import check, libc

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 0x80000
MS_PRIVATE = 0x40000
MNT_FORCE = 0x1
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

class Isolation(enum.Enum):
    """Where the mounts of ``hwcaps-fs run`` live (the value says it in words)."""

    MOUNT = "a private mount namespace"
    USER = "a private user and mount namespace"
    NONE = "the caller's mount namespace"

    @property
    def private(self) -> bool:
        """Whether mounts made now stay invisible to the rest of the system."""
        return self is not Isolation.NONE


def _encode(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def make_directory(path: str, mode: int, exist_ok: bool = False) -> bool:
    """Create the directory ``path`` with exactly ``mode``, whatever the umask (under a umask
    of 077 other users could not reach what is made for them, such as the private bind mount
    that sudo is served from). Returns whether it was created."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not exist_ok:
            raise
        return False
    os.chmod(path, mode)
    return True


def unshare(flags: int) -> None:
    check(libc.unshare(flags))


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    check(libc.mount(_encode(source), os.fsencode(target), _encode(fstype), flags,
                       _encode(data)), target)


def umount(target: str, flags: int = 0) -> None:
    check(libc.umount2(os.fsencode(target), flags), target)


def detach(path: str) -> None:
    """Lazily unmount ``path``: umount2(MNT_DETACH) where we may (root, or a mount made in our
    own user namespace), else fusermount3 (a FUSE mount libfuse made through it for a user)."""
    try:
        umount(path, MNT_DETACH)
        return
    except PermissionError:
        pass
    result = subprocess.run(["fusermount3", "-u", "-z", "--", path], capture_output=True,
                            text=True, check=False)
    if result.returncode:
        raise MountError(f"cannot unmount {path}: {result.stderr.strip()}")


def set_parent_death_signal(signum: int) -> None:
    """Have the kernel send ``signum`` when the thread that forked us ends. An ``exec`` in
    the parent does not count: the process lives on as the new program."""
    check(libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0))


def become_subreaper() -> None:
    """Adopt orphaned descendants (a daemon that double-forks stays our child to wait for)."""
    check(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))


def _map_ids(uid: int, gid: int) -> None:
    """Map our own ids to themselves in the new user namespace (all an unprivileged process
    may map), so the command still sees its own uid; setgroups must be denied first."""
    maps = (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1"))
    try:
        for name, text in maps:
            with open(f"/proc/self/{name}", "w", encoding="ascii") as file:
                file.write(text)
    except OSError as exc:
        raise MountError(f"cannot map ids in a new user namespace: {exc.strerror}") from None


def isolate() -> Isolation:
    """Move this (single-threaded) process into a mount namespace of its own, and a user
    namespace too when a mount namespace alone is not permitted, then make every mount a
    slave: mounts made afterwards do not leak to the host, host mounts still show up.

    Returns :attr:`Isolation.NONE` when neither is permitted (no CAP_SYS_ADMIN and user
    namespaces disabled or filtered by seccomp, as in Docker's default profile), or when the
    new namespace's mounts cannot be made slaves.
    """
    uid, gid = os.geteuid(), os.getegid()
    try:
        unshare(CLONE_NEWNS)
        isolation = Isolation.MOUNT
    except OSError:
        try:
            unshare(CLONE_NEWUSER | CLONE_NEWNS)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EINVAL, errno.ENOSPC, errno.EUSERS,
                                 errno.ENOSYS):
                raise
            return Isolation.NONE
        _map_ids(uid, gid)
        isolation = Isolation.USER
    try:
        mount(None, "/", None, MS_REC | MS_SLAVE)
    except OSError:
        # Mounting is filtered (Docker's AppArmor profile allows unshare but denies every
        # mount): mounts made here might propagate, so this namespace counts as not private.
        return Isolation.NONE
    return isolation
