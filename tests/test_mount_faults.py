"""Faults under real mounts: a store whose reads stall, and a daemon killed under load.

A stalled request must stall only itself: every exec through the mount waits for the daemon,
so one read stuck on a slow store (a hung NFS server, say) must not hold up the others. The
slow store is tests/slow_fs.py, a FUSE file system of our own that holds the open or the read
of one file until told to go on. And a daemon killed with SIGKILL while names are being
executed through it must leave the directory usable again (auto_unmount), with no exec left
hanging.

Every wait is bounded and teardown never depends on the daemons: held requests are released
first (so hwcaps-fs can exit on SIGTERM), then hwcaps-fs is stopped and unmounted, then the slow
store; anything that does not stop is killed and its mount lazily detached.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from hwcaps_fs.system.bindmount import RUNTIME_DIR, runtime_name
from hwcaps_fs.system.mountinfo import mounts_at
from tests.builders import compile_level, install, variant_store
from tests.mounting import (
    DEADLINE,
    ENVIRONMENT,
    cleanup,
    daemon_pids,
    is_fuse_mounted,
    mounted,
    wait_until,
)
from tests.slow_fs import HELD, HOLD, RELEASE

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("fuse_ok")]

#: How long a request that must not wait for the held one may take (generous: the machine is
#: shared, and this only has to tell "answered" from "stuck").
PROMPT = 5.0

_Result = TypeVar("_Result")


def promptly(what: str, action: Callable[[], _Result]) -> _Result:
    """``action()``, run in a thread so that a request stuck in the kernel fails the test
    (after :data:`PROMPT` seconds) instead of hanging it. A stuck thread is a daemon thread,
    freed at teardown when the held request is released."""
    outcome: list[_Result] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            outcome.append(action())
        except BaseException as exc:  # handed over to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=call, name=what, daemon=True)
    thread.start()
    thread.join(PROMPT)
    if thread.is_alive():
        raise AssertionError(f"{what}: no answer within {PROMPT} s while a request is held")
    if errors:
        raise errors[0]
    return outcome[0]


def through_env(program: Path) -> list[str]:
    """The command that executes ``program`` from a separate process, env(1).

    CPython starts children with vfork() and keeps the GIL until the child has exec'd, so a
    thread exec'ing a program whose exec is stuck in a FUSE request freezes every thread of
    the test, watchdogs included (measured). env's exec is never stuck; its exec of
    ``program`` may be, and then only env waits.
    """
    return ["env", str(program)]


def run(*command: str | Path) -> str:
    """Run ``command`` (programs that can stall: see :func:`through_env`) and its output."""
    result = subprocess.run(list(map(str, command)), capture_output=True, text=True,
                            timeout=DEADLINE, check=True)
    return result.stdout.strip()


def execute(program: Path) -> str:
    """What ``program`` prints, run through env(1) (see :func:`through_env`)."""
    return run(*through_env(program))


# -- the slow store ----------------------------------------------------------------------


@dataclass
class SlowStore:
    """tests/slow_fs.py serving ``source`` at ``path``; ``control`` arms and releases holds."""

    path: Path
    control: Path
    process: subprocess.Popen[bytes]

    def hold(self, operation: str) -> None:
        (self.control / HOLD).write_text(operation)

    def held(self) -> bool:
        return (self.control / HELD).exists()

    def release(self) -> None:
        (self.control / RELEASE).touch()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=DEADLINE)


def _detach(path: Path) -> None:
    for _ in mounts_at(str(path)):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=DEADLINE,
                       check=False)


@contextlib.contextmanager
def slow_store(source: Path, path: Path, held_name: str) -> Iterator[SlowStore]:
    """Serve ``source`` at ``path`` through tests/slow_fs.py, holding requests on files called
    ``held_name`` when armed; on the way out release them, stop it and detach what is left."""
    control = path.parent / f".{path.name}.control"
    control.mkdir()
    path.mkdir()
    log = control.parent / f".{path.name}.stderr"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.slow_fs", str(source), str(path), str(control),
             held_name], stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
            env=ENVIRONMENT, cwd="/")
    store = SlowStore(path, control, process)
    try:
        wait_until(lambda: is_fuse_mounted(path) or process.poll() is not None, DEADLINE,
                   "the slow store to mount")
        assert process.poll() is None, log.read_text(errors="replace")
        yield store
    finally:
        store.release()
        _stop(process)
        _detach(path)


# -- a stalled store ---------------------------------------------------------------------


@contextlib.contextmanager
def over_slow_store(binaries: Path, tmp_path: Path,
                    *extra: tuple[str, str]) -> Iterator[tuple[SlowStore, Path]]:
    """hwcaps-fs at ``tmp_path/mnt`` over a slow store holding ``bin/foo`` in variants and
    the baseline programs ``extra`` (name, text printed), requests on files called ``slow``
    held when armed. Teardown order: held requests released, hwcaps-fs, the slow store."""
    source = variant_store(binaries, tmp_path / "source", "bin/foo")
    for name, text in extra:
        install(compile_level(binaries, "baseline", text=text), source / "bin" / name)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with slow_store(source, tmp_path / "slow", "slow") as slow, mounted(slow.path, mnt):
        try:
            yield slow, mnt
        finally:
            slow.release()


def assert_answered(mnt: Path, level: str) -> None:
    """Requests that must not wait for a held one on ``bin/slow``: an exec of ``bin/foo``, a
    listing and a stat (not of ``bin/slow``: its own lookup may be what is held)."""
    assert promptly("exec of another name", lambda: execute(mnt / "bin/foo")) == level
    assert promptly("listdir", lambda: sorted(os.listdir(mnt / "bin"))) == ["foo", "slow"]
    promptly("stat", (mnt / "bin/foo").stat)


@pytest.mark.usefixtures("both_exec_paths")
def test_a_held_read_stalls_nothing_else(binaries: Path, tmp_path: Path, level: str) -> None:
    """While a read of one file of the store is stuck, every other request is answered, a
    live update included; the held read then completes intact."""
    with over_slow_store(binaries, tmp_path, ("slow", "slow")) as (slow, mnt):
        slow.hold("read")
        reader = subprocess.Popen(["cat", str(mnt / "bin/slow")], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        try:
            wait_until(slow.held, DEADLINE, "a read of bin/slow to be held")
            assert_answered(mnt, level)

            new_program = compile_level(binaries, "baseline", text="new")
            promptly("a change to the store", lambda: run("cp", new_program,
                                                          slow.path / "bin/new"))
            promptly("the live update", lambda: wait_until(
                (mnt / "bin/new").exists, PROMPT, "bin/new in the mount"))
            assert promptly("exec of the new name", lambda: execute(mnt / "bin/new")) == "new"

            assert reader.poll() is None, "the read was not held"
            slow.release()
            out, err = reader.communicate(timeout=DEADLINE)
            assert (reader.returncode, err) == (0, b"")
            assert out == (tmp_path / "source/bin/slow").read_bytes()
        finally:
            slow.release()
            if reader.poll() is None:
                reader.kill()
            reader.wait(timeout=DEADLINE)


def test_a_held_open_stalls_only_its_name(binaries: Path, tmp_path: Path, level: str) -> None:
    """A file added to the store whose open hangs holds up only that name (its exec, its
    lookups): the update shows it without opening it (a baseline is opened when first looked
    up, to serve it), and no other request waits; once the open goes through it is served."""
    with over_slow_store(binaries, tmp_path) as (slow, mnt):
        slow.hold("open")
        program = compile_level(binaries, "baseline", text="slow")
        promptly("a change to the store", lambda: run("cp", program, slow.path / "bin/slow"))
        wait_until(lambda: "slow" in os.listdir(mnt / "bin"), DEADLINE, "the update")
        held = subprocess.Popen(through_env(mnt / "bin/slow"), stdout=subprocess.PIPE,
                                text=True)
        try:
            wait_until(slow.held, DEADLINE, "the daemon's open of bin/slow to be held")
            assert_answered(mnt, level)
            slow.release()
            assert held.communicate(timeout=DEADLINE)[0].strip() == "slow"
        finally:
            if held.poll() is None:
                slow.release()
                held.kill()
                held.wait(DEADLINE)


# -- a daemon killed under load ----------------------------------------------------------


@dataclass(frozen=True)
class Exec:
    """One exec of the load: when it ran, what it printed, how it failed."""

    start: float
    end: float
    output: str
    failure: str | None


def exec_loop(program: Path, stop: threading.Event, execs: list[Exec]) -> None:
    """Exec ``program`` until ``stop``; an exec that does not return in time is recorded as a
    hang, not waited for."""
    while not stop.is_set():
        start = time.monotonic()
        output, failure = "", None
        try:
            result = subprocess.run(through_env(program), capture_output=True, text=True,
                                    timeout=DEADLINE, check=False)
            output = result.stdout.strip()
            if result.returncode:  # env's message ends with the strerror of the exec
                reason = result.stderr.strip().rpartition(": ")[2]
                failure = f"exit status {result.returncode}: {reason}"
        except subprocess.TimeoutExpired:
            failure = "hung"
        execs.append(Exec(start, time.monotonic(), output, failure))


def test_kill_9_under_load_brings_the_directory_back(binaries: Path, public: Path,
                                                     level: str) -> None:
    """SIGKILL while four threads exec through an in-place auto_unmount mount: the mount goes,
    the underlying baseline runs again, no exec hangs, only execs in flight fail, and a
    restart serves again and cleans up after the dead daemon (its bind mount: a store every
    user may reach has one)."""
    store = variant_store(binaries, public / "store", "bin/foo")
    program = store / "bin/foo"
    bind = Path(RUNTIME_DIR, runtime_name(str(store)))
    execs: list[Exec] = []
    stop = threading.Event()
    threads = [threading.Thread(target=exec_loop, args=(program, stop, execs), daemon=True)
               for _ in range(4)]
    try:
        with mounted(store, store, "-o", "auto_unmount") as mount:
            for thread in threads:
                thread.start()
            wait_until(lambda: len(execs) >= 40, DEADLINE, "the load to run")
            killed = time.monotonic()
            mount.stop(signal.SIGKILL)
            wait_until(lambda: not is_fuse_mounted(store), 5, "auto_unmount")
            unmounted = time.monotonic()
            wait_until(lambda: sum(ran.start > unmounted for ran in execs) >= 20, DEADLINE,
                       "execs after the unmount")
            stop.set()
            for thread in threads:
                thread.join(2 * DEADLINE)
            assert not any(thread.is_alive() for thread in threads)

            assert [ran for ran in execs if ran.failure == "hung"] == []
            before = [ran for ran in execs if ran.end < killed]
            after = [ran for ran in execs if ran.start > unmounted]
            in_flight = [ran for ran in execs if ran.end >= killed and ran.start <= unmounted]
            assert {(ran.output, ran.failure) for ran in before} == {(level, None)}
            assert {(ran.output, ran.failure) for ran in after} == {("baseline", None)}
            failed = Counter(ran.failure for ran in in_flight if ran.failure)
            print(f"{len(execs)} execs, {len(in_flight)} in the {unmounted - killed:.2f} s from "
                  f"the kill to the unmount; failed: {dict(failed)}")
            assert daemon_pids(store) == []
            assert mounts_at(str(bind)), "the dead daemon's bind mount (no one removed it)"

        with mounted(store, store) as mount:
            assert execute(program) == level
            assert mount.stop() == 0
        assert not mounts_at(str(bind)) and not bind.exists()
        assert "glibc-hwcaps" in os.listdir(store)
    finally:
        stop.set()
        cleanup(store)
