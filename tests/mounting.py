"""Real hwcaps-fs mounts for tests: started through the command line, always torn down.

:func:`mounted` runs ``hwcaps-fs mount --foreground`` as a subprocess and waits for its READY=1
on a private $NOTIFY_SOCKET (the systemd protocol, so that path is tested too). Whatever the
test does, the exit path stops the daemon (SIGTERM, then SIGKILL), detaches any mount left at
the mountpoint and at its bind mount, and kills any daemon still serving that mountpoint (a
background mount's detached daemon included). Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hwcaps_fs.system.bindmount import RUNTIME_DIR, runtime_name
from hwcaps_fs.system.guard import NAME
from hwcaps_fs.system.mountinfo import mounts_at

#: Upper bound for a mount to become ready or a daemon to exit.
DEADLINE = 15.0

#: The unmount guard's process name (its command line is its daemon's).
GUARD_NAME = NAME.decode()

#: The environment of the commands: this checkout importable from any working directory.
ENVIRONMENT = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


#: The command line, as this checkout's interpreter runs it.
HWCAPS_FS = (sys.executable, "-m", "hwcaps_fs")


def hwcaps_fs(*args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
    """Run the command line as a subprocess (stdio captured, time-bound)."""
    return subprocess.run([*HWCAPS_FS, *args], capture_output=True,
                          text=True, timeout=timeout, check=False, env=ENVIRONMENT, cwd="/")


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> None:
    """A refusal as the command line promises it: exit ``code`` and one line on stderr."""
    assert result.returncode == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hwcaps-fs: ")
    assert "Traceback" not in result.stderr


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; returns the seconds it took, fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def is_fuse_mounted(path: Path) -> bool:
    return any(entry.fstype.startswith("fuse") for entry in mounts_at(str(path)))


def _processes(mountpoint: Path) -> Iterator[tuple[int, str]]:
    """Processes whose command line is ``hwcaps_fs mount ... MOUNTPOINT``, with their name."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if b"hwcaps_fs" in argv and b"mount" in argv and os.fsencode(mountpoint) in argv:
            yield int(entry.name), name


def daemon_pids(mountpoint: Path) -> list[int]:
    """The daemons serving ``mountpoint`` (its unmount guard, which has the same command
    line, is not one: :func:`guard_pids`)."""
    return [pid for pid, name in _processes(mountpoint) if name != GUARD_NAME]


def guard_pids(mountpoint: Path) -> list[int]:
    """The unmount guards of daemons of ``mountpoint`` (hwcaps_fs.system.guard): a daemon's
    exits once the daemon has ended and its mount is gone."""
    return [pid for pid, name in _processes(mountpoint) if name == GUARD_NAME]


def children_named(parent: int, name: str) -> list[int]:
    """The processes named ``name`` (``comm``) whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and (entry / "comm").read_text().strip() == name:
                found.append(int(entry.name))
    return found


def _detach_all(path: Path) -> None:
    for _ in range(len(mounts_at(str(path)))):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=DEADLINE,
                       check=False)


def cleanup(mountpoint: Path) -> None:
    """Leave no daemon, FUSE mount or bind mount behind for ``mountpoint``."""
    for pid in daemon_pids(mountpoint):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not guard_pids(mountpoint), DEADLINE, "the guards to exit")
    for pid in guard_pids(mountpoint):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if is_fuse_mounted(mountpoint):
        _detach_all(mountpoint)
    bind = Path(RUNTIME_DIR, runtime_name(os.path.abspath(mountpoint)))
    if bind.exists():
        _detach_all(bind)
        with contextlib.suppress(OSError):
            bind.rmdir()


@dataclass
class Mount:
    """A running foreground daemon serving ``path``; ``log`` collects its stderr."""

    path: Path
    process: subprocess.Popen[bytes]
    log: Path
    #: what it sent to $NOTIFY_SOCKET once serving (READY=1 and STATUS=)
    notified: str = ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the daemon and wait for it; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=DEADLINE)


def _ready_socket(directory: Path) -> socket.socket:
    path = directory / "notify.sock"
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    return sock


def _wait_ready(sock: socket.socket, process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            message = sock.recv(4096)
            if b"READY=1" in message:
                return message.decode(errors="replace")
        except TimeoutError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"the daemon exited with {process.returncode}:\n"
                                 f"{log.read_text(errors='replace')}")
    raise AssertionError(f"no READY=1 within {DEADLINE} s:\n{log.read_text(errors='replace')}")


def stop(process: subprocess.Popen[bytes], timeout: float = DEADLINE) -> None:
    """End a foreground daemon: SIGTERM (it unmounts), SIGKILL if it will not go."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def suite_options() -> tuple[str, ...]:
    """``-o`` options every mount of the tests gets, from $HWCAPS_FS_TEST_OPTIONS:
    ``HWCAPS_FS_TEST_OPTIONS=fastpath=off make test`` runs the suite on the stock exec path."""
    options = os.environ.get("HWCAPS_FS_TEST_OPTIONS")
    return ("-o", options) if options else ()


@contextlib.contextmanager
def mounted(root: Path, mountpoint: Path, *args: str, env: dict[str, str] | None = None,
            prefix: tuple[str, ...] = (), journal: bool = False,
            command_line: tuple[str, ...] = HWCAPS_FS) -> Iterator[Mount]:
    """``hwcaps-fs mount --foreground --root ROOT [args] MOUNTPOINT`` for the ``with`` body,
    run through ``prefix`` (``setpriv ...``) when given, by ``command_line``; with
    ``journal``, its stderr is named by $JOURNAL_STREAM, as systemd does when stderr is the
    journal."""
    work = mountpoint.parent / f".{mountpoint.name}.daemon"
    work.mkdir(exist_ok=True)
    log = work / "stderr"
    sock = _ready_socket(work)
    command = [*prefix, *command_line, "mount", "--foreground", "--root", str(root),
               *suite_options(), *args, str(mountpoint)]
    environment = {**ENVIRONMENT, **(env or {}), "NOTIFY_SOCKET": str(work / "notify.sock")}
    with log.open("wb") as stderr:
        if journal:
            named = os.fstat(stderr.fileno())
            environment["JOURNAL_STREAM"] = f"{named.st_dev}:{named.st_ino}"
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stderr,
                                   stderr=stderr, env=environment, cwd="/")
    try:
        notified = _wait_ready(sock, process, log)
        yield Mount(mountpoint, process, log, notified)
    finally:
        sock.close()
        stop(process)
        cleanup(mountpoint)
