"""The unmount guard: a mount made with ``auto_unmount`` never outlives its daemon.

fusermount3 (libfuse 3.14) removes an ``auto_unmount`` mount when the daemon's socket closes,
but only if opening the mountpoint then fails with exactly ENOTCONN. At the daemon's death
the socket can close before the kernel has released /dev/fuse and aborted the connection:
fusermount3's open is then queued, ended by the abort with ECONNABORTED, and fusermount3
decides the file system is alive and exits for good, leaving a dead mount (ENOTCONN) over
the directory.

So the daemon forks a guard before it mounts, before any thread or event loop (it holds
neither /dev/fuse nor fusermount3's socket nor the handshake pipe of ``mount``'s parent). The
guard keeps the read end of a pipe whose write end only the daemon has; after mounting the
daemon writes its mount's id there. The guard ignores the stop signals
(:data:`UNIT_SIGNALS`: systemd sends them to the whole unit) and reads until end of file,
i.e. until the daemon has ended, in any way.
Then, for a bounded time, while that mount is still the topmost one at the mountpoint, it
does what fusermount3 does and retries where fusermount3 gives up: ENOTCONN detaches the
mount, ECONNABORTED (the connection is not aborted yet) tries again, a successful open
means the file system is alive (someone else serves it) and the guard leaves it.

A daemon killed while one of its threads waits in the kernel for a request it will never
answer (an entry invalidation waits for the lookups in that directory) does not end: its
main thread is a zombie, the waiting thread cannot be killed, and the pipe stays open. The
guard learns of it without waking up periodically (an always-on mount must not wake the CPU
for it): it was forked by the daemon's main thread, and with ``PR_SET_PDEATHSIG`` the kernel
sends it :data:`DEATH_SIGNAL` when that thread ends, even while other threads of the daemon
live on (prctl(2): the parent is the thread that created the process). The signal only
wakes the guard's ``select`` (a wakeup pipe); the guard then gives the daemon
:data:`GRACE_SECONDS` for its last thread to end and the pipe to reach end of file. Still
open with the daemon a zombie and its mount still there, the guard aborts the connection
(umount2 with MNT_FORCE, root only), which fails the waiting requests and lets the daemon
end. The signal may also come from elsewhere (``systemctl kill`` signals the whole unit): it
only ever makes the guard look again, and a daemon that is not a zombie is waited for as
before, without a timeout.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import time
from typing import NoReturn

from hwcaps_fs.system.libc import libc
from hwcaps_fs.system.mountinfo import mounts_at
from hwcaps_fs.system.namespaces import MNT_FORCE, detach, set_parent_death_signal, umount

#: The guard's process name (``comm``; its command line stays the daemon's).
NAME = b"hwcaps-fs-guard"

#: How long the guard tries after the daemon ended; past it the kernel kills the guard
#: (SIGALRM), even in an open the kernel keeps waiting for.
GUARD_SECONDS = 5

#: Between two tries while the connection is not aborted yet.
RETRY_SECONDS = 0.02

#: The signals that would end the guard, sent to the whole unit by systemd (stop: SIGTERM,
#: then SIGHUP) or ``systemctl kill -s``: ignored, so that the guard outlives its daemon and
#: does its work. Those the daemon takes as a stop (hwcaps_fs.fuse.serve.STOP_SIGNALS) and
#: SIGHUP, but :data:`DEATH_SIGNAL`, which wakes it, and SIGKILL, which cannot be ignored.
UNIT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2,
                signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGPWR,
                signal.SIGXCPU)

#: What the kernel sends the guard when the daemon's main thread ends (PR_SET_PDEATHSIG). The
#: guard gets no SIGUSR1 otherwise (unless someone signals the whole unit: then it looks again).
DEATH_SIGNAL = signal.SIGUSR1

#: Once the daemon's main thread has ended, how long its other threads get to end (the pipe
#: then reaches end of file) before the guard takes the daemon for stuck in the kernel.
GRACE_SECONDS = 0.5

PR_SET_NAME = 15

class Guard:
    """The daemon's end of the guard: :meth:`mounted` once the mount is made, :meth:`close`
    when the daemon is done with it (its death does the same)."""

    def __init__(self, mountpoint: str) -> None:
        self._fd: int | None = start(mountpoint)

    def mounted(self, mountpoint: str) -> None:
        """Tell the guard which mount is ours: the topmost one at ``mountpoint``."""
        entries = mounts_at(mountpoint)
        if self._fd is not None and entries:
            os.write(self._fd, b"%d\n" % entries[-1].mount_id)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def start(mountpoint: str) -> int:
    """Fork the guard of ``mountpoint``; the write end of its pipe (close-on-exec)."""
    reader, writer = os.pipe()
    daemon = os.getpid()
    if os.fork() == 0:
        _guard(reader, mountpoint, daemon)
    os.close(reader)
    return writer


def _guard(reader: int, mountpoint: str, daemon: int) -> NoReturn:
    """The guard process: nothing it does may reach the daemon's stdio, logs or locks."""
    try:
        name = ctypes.create_string_buffer(NAME)
        libc.prctl(PR_SET_NAME, ctypes.addressof(name), 0, 0, 0)
        for signum in UNIT_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.dup2(reader, 3)
        os.closerange(4, os.sysconf("SC_OPEN_MAX"))
        mount_id = _wait_for_daemon(3, _wake_at_death(daemon), mountpoint, daemon)
        if mount_id is not None:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(GUARD_SECONDS)
            _unmount_if_dead(mountpoint, mount_id)
    finally:
        os._exit(0)


def _wake_at_death(daemon: int) -> int:
    """A pipe the end of the daemon's main thread (or any :data:`DEATH_SIGNAL`) makes
    readable; its read end."""
    wake, woken = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(DEATH_SIGNAL, lambda signum, frame: None)  # the wakeup byte is the point
    signal.set_wakeup_fd(woken)
    set_parent_death_signal(DEATH_SIGNAL)
    # The thread may have ended before the prctl: then the whole daemon has (we are another
    # process's child now), or its main thread alone has (a zombie; we are a child of one
    # of its other threads, and getppid() still says the daemon).
    if os.getppid() != daemon or _is_zombie(daemon):
        os.write(woken, b"\0")
    return wake


def _wait_for_daemon(reader: int, wake: int, mountpoint: str, daemon: int) -> int | None:
    """Read until the daemon has ended; the id of its mount, if it made one. No timeout
    while the daemon's main thread lives; once it has ended, a daemon whose pipe is still
    open :data:`GRACE_SECONDS` later and which is a zombie has its connection aborted
    (once)."""
    said = b""
    aborted = False
    timeout: float | None = None
    while True:
        ready = select.select([reader, wake], [], [], timeout)[0]
        if wake in ready:
            os.read(wake, 64)
            timeout = GRACE_SECONDS
        elif not ready:  # the grace is over, the pipe still open: stuck, or a stray signal
            timeout = None
            words = said.split()
            if words and not aborted and _is_zombie(daemon):
                aborted = True
                _abort(mountpoint, int(words[-1]))
        if reader in ready:
            chunk = os.read(reader, 64)
            if not chunk:
                break
            said += chunk
    words = said.split()
    return int(words[-1]) if words else None


def _is_zombie(pid: int) -> bool:
    """Whether the main thread of ``pid`` has ended while the process has not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def _abort(mountpoint: str, mount_id: int) -> None:
    """Abort the FUSE connection of the mount ``mount_id`` if it is still the topmost one
    at ``mountpoint`` (umount2 with MNT_FORCE aborts it, then unmounts if nothing is busy)."""
    entries = mounts_at(mountpoint)
    if entries and entries[-1].mount_id == mount_id:
        # busy: the connection is aborted all the same; not root: nothing to be done
        with contextlib.suppress(OSError):
            umount(mountpoint, MNT_FORCE)


def _unmount_if_dead(mountpoint: str, mount_id: int) -> None:
    deadline = time.monotonic() + GUARD_SECONDS
    while time.monotonic() < deadline:
        entries = mounts_at(mountpoint)
        if not entries or entries[-1].mount_id != mount_id:
            return  # unmounted (cleanly, or by fusermount3), or covered by another mount
        try:
            os.close(os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY))
            return  # alive: served by someone else
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                detach(mountpoint)
                return
            if exc.errno != errno.ECONNABORTED:  # the connection is not aborted yet
                return
        time.sleep(RETRY_SECONDS)
