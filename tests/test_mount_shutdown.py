"""Every way of ending the daemon while the store changes fast (the kernel being told to
forget entries all the while) leaves the plain directory back and no traceback: a stop
signal, SIGHUP (a rescan: it keeps serving), ``hwcaps-fs umount``, ``umount -l`` and
``fusermount3 -u`` from outside, and ``kill -9`` (the unmount guard removes the mount).

$HWCAPS_FS_SHUTDOWN_ROUNDS sets how many times each way is tried (default 1)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.builders import compile_level, install
from tests.mounting import (
    DEADLINE,
    guard_pids,
    hwcaps_fs,
    is_fuse_mounted,
    mounted,
    wait_until,
)

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("fuse_ok")]

ROUNDS = int(os.environ.get("HWCAPS_FS_SHUTDOWN_ROUNDS", "1"))

#: Names in the store, each with a variant that is renamed over again and again.
NAMES = 200

#: How long the changes and lookups run before the daemon is stopped, in seconds.
CHURN = 0.3

WAYS = ["SIGTERM", "SIGINT", "SIGHUP", "hwcaps-fs umount", "umount -l", "fusermount3 -u",
        "kill -9"]


def _store(binaries: Path, root: Path) -> Path:
    baseline = compile_level(binaries, "baseline", mark="mneeded")
    variant = compile_level(binaries, "x86-64-v2", mark="mneeded")
    for index in range(NAMES):
        install(baseline, root / f"bin/p{index}")
        install(variant, root / f"glibc-hwcaps/x86-64-v2/bin/p{index}")
    return root


def _churn(root: Path, stop: threading.Event) -> None:
    """Rename new builds over the variants, make and remove directories, add and remove
    names, as fast as it goes."""
    variants = root / "glibc-hwcaps/x86-64-v2/bin"
    data = (variants / "p0").read_bytes()
    turn = 0
    while not stop.is_set():
        turn += 1
        name = f"p{turn % NAMES}"
        new = variants / f".{name}.new"
        new.write_bytes(data)
        new.chmod(0o755)
        new.rename(variants / name)
        directory = root / f"bin/d{turn % 7}"
        with contextlib.suppress(OSError):
            directory.mkdir()
        with contextlib.suppress(OSError):
            (root / f"bin/d{(turn + 3) % 7}").rmdir()
        extra = root / f"bin/x{turn % 50}"
        if turn % 2:
            extra.write_bytes(b"#!/bin/sh\n")
        else:
            extra.unlink(missing_ok=True)


def _look(mountpoint: Path, stop: threading.Event) -> None:
    """Look names up through the mount, so that the kernel holds entries to forget."""
    turn = 0
    while not stop.is_set():
        turn += 1
        with contextlib.suppress(OSError):
            os.stat(mountpoint / f"bin/p{turn % NAMES}")
            if turn % 50 == 0:
                os.listdir(mountpoint / "bin")


@dataclass
class _Busy:
    """The changes and the lookups, each in a thread until its event is set."""

    churning: threading.Event = field(default_factory=threading.Event)
    looking: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def _busy(root: Path, mountpoint: Path) -> Iterator[_Busy]:
    busy = _Busy()
    threads = [threading.Thread(target=_churn, args=(root, busy.churning)),
               threading.Thread(target=_look, args=(mountpoint, busy.looking))]
    for thread in threads:
        thread.start()
    try:
        yield busy
    finally:
        busy.churning.set()
        busy.looking.set()
        for thread in threads:
            thread.join(DEADLINE)


def _end(way: str, mountpoint: Path, process: subprocess.Popen[bytes], busy: _Busy) -> None:
    """End the daemon ``way`` (SIGHUP: after checking it keeps serving). An unmount stops
    the lookups first (it would be refused as busy); a ``kill -9`` may leave the daemon a
    zombie, one of its threads waiting for a lookup never answered, until its unmount guard
    aborts the connection (hwcaps_fs.system.guard). The changes go on."""
    if way == "SIGHUP":
        process.send_signal(signal.SIGHUP)
        time.sleep(CHURN)
        assert process.poll() is None, "SIGHUP ended the daemon"
        assert is_fuse_mounted(mountpoint)
        os.stat(mountpoint / "bin/p1")
        process.send_signal(signal.SIGTERM)
    elif way in ("SIGTERM", "SIGINT", "kill -9"):
        process.send_signal({"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT,
                             "kill -9": signal.SIGKILL}[way])
    else:
        busy.looking.set()
        time.sleep(0.05)  # the last lookup answered
        if way == "hwcaps-fs umount":
            result = hwcaps_fs("umount", str(mountpoint))
            assert result.returncode == 0, result.stderr
        else:
            command = ["umount", "-l"] if way == "umount -l" else ["fusermount3", "-u"]
            subprocess.run([*command, str(mountpoint)], check=True, timeout=DEADLINE,
                           capture_output=True)
    process.wait(timeout=DEADLINE)


@pytest.mark.parametrize("exec_path", ["fast path", "stock path"])
@pytest.mark.parametrize("way", WAYS)
def test_ending_while_the_store_changes(binaries: Path, public: Path, way: str,
                                        exec_path: str) -> None:
    store = _store(binaries, public / "store")
    mnt = public / "mnt"
    mnt.mkdir()
    options = ["-o", "auto_unmount" + (",fastpath=off" if exec_path == "stock path" else "")]
    for _ in range(ROUNDS):
        with mounted(store, mnt, *options) as mount:
            with _busy(store, mnt) as busy:
                time.sleep(CHURN)
                _end(way, mnt, mount.process, busy)
            if way == "kill -9":
                wait_until(lambda: not is_fuse_mounted(mnt) and not guard_pids(mnt),
                           DEADLINE, "the guard to remove the mount")
            else:
                assert mount.process.returncode == 0, mount.log_text()
            log = mount.log_text()
        assert "Traceback" not in log, log
        assert not is_fuse_mounted(mnt)
        assert os.listdir(mnt) == []
