"""Running one build of a program once, the way a benchmark needs: ``hwcaps-fs compare``'s shell.

Every run gets the same ``argv`` (``argv[0]`` included, so a program that prints its name or
dispatches on it behaves the same whichever build runs), the caller's environment and working
directory, and the same standard input from its first byte: a file that is rewound before each
run (a pipe would be empty after the first run, and a terminal would wait for a person). Its
standard output and error go to files, not pipes, so that writing them costs the same for
every build and nothing is lost; what a run wrote is kept only as a digest.

The wall time is taken around ``posix_spawn`` and ``wait4``; the CPU time (user + system) is the
child's own, from ``wait4``'s resource usage.
"""

from __future__ import annotations

import hashlib
import os
import select
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: How much of the output to keep for a message when two builds disagree.
EXCERPT_BYTES = 200


@dataclass(frozen=True)
class Outcome:
    """How a run ended and what it wrote. ``status`` is the exit status, or minus the signal
    number that killed the child (as :mod:`subprocess` reports it); ``error`` is set when the
    program could not be started or was killed for taking too long."""

    status: int
    stdout_digest: str
    stderr_digest: str
    stdout_excerpt: bytes = b""
    error: str | None = None

    def describe_status(self) -> str:
        if self.error is not None:
            return self.error
        if self.status < 0:
            try:
                name = signal.Signals(-self.status).name
            except ValueError:
                name = f"signal {-self.status}"
            return f"killed by {name}"
        return f"exit status {self.status}"


@dataclass(frozen=True)
class Run:
    """One timed run: wall and CPU seconds, and its :class:`Outcome`."""

    wall: float
    cpu: float
    outcome: Outcome


class Runner:
    """Runs programs with one standard input, into scratch output files (closed by
    :meth:`close`; use as a context manager)."""

    def __init__(self, stdin_fd: int, scratch_dir: str | None = None,
                 timeout: float | None = None) -> None:
        self.stdin_fd = stdin_fd
        self.timeout = timeout
        self.stdout_fd = scratch_file(scratch_dir)
        self.stderr_fd = scratch_file(scratch_dir)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in (self.stdout_fd, self.stderr_fd):
            os.close(fd)

    def run(self, path: str, argv: Sequence[str], env: Mapping[str, str]) -> Run:
        """Run the program at ``path`` with ``argv`` and ``env``; never raises for what the
        program does (a failure to start is an :class:`Outcome` with ``error``)."""
        for fd in (self.stdout_fd, self.stderr_fd):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        if _seekable(self.stdin_fd):
            os.lseek(self.stdin_fd, 0, os.SEEK_SET)
        actions = [(os.POSIX_SPAWN_DUP2, self.stdin_fd, 0),
                   (os.POSIX_SPAWN_DUP2, self.stdout_fd, 1),
                   (os.POSIX_SPAWN_DUP2, self.stderr_fd, 2)]
        start = time.perf_counter()
        try:
            pid = os.posix_spawn(path, list(argv), dict(env), file_actions=actions)
        except OSError as exc:
            return Run(0.0, 0.0, Outcome(-1, "", "", error=f"cannot execute: {exc.strerror}"))
        error = None if self._wait(pid) else f"killed after the {self.timeout:g} s timeout"
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        outcome = Outcome(code, *self._digests(), error=error)
        return Run(wall, usage.ru_utime + usage.ru_stime, outcome)

    def _wait(self, pid: int) -> bool:
        """Wait for ``pid`` to exit, at most ``timeout`` seconds: False (and the child
        killed) when it took longer. The child is not reaped."""
        if self.timeout is None:
            return True
        pidfd = os.pidfd_open(pid)
        try:
            ready, _, _ = select.select([pidfd], [], [], self.timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
            return bool(ready)
        finally:
            os.close(pidfd)

    def _digests(self) -> tuple[str, str, bytes]:
        stdout = _digest(self.stdout_fd)
        stderr = _digest(self.stderr_fd)
        excerpt = os.pread(self.stdout_fd, EXCERPT_BYTES, 0)
        return stdout, stderr, excerpt


def scratch_file(directory: str | None) -> int:
    """An unnamed read-write file (O_TMPFILE where the file system has it)."""
    where = directory or os.environ.get("TMPDIR") or "/tmp"
    try:
        return os.open(where, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        handle, name = tempfile.mkstemp(dir=where)
        os.unlink(name)
        return handle


def _seekable(fd: int) -> bool:
    try:
        os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return False
    return True


def _digest(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()
