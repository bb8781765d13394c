"""Real mounts: exec, stat, xattrs, read-only, other users, privileges, in place, live
updates, background mode, crashes. Each test mounts through the command line and always
unmounts (tests.mounting)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hwcaps_fs.fuse.serve import STOP_SIGNALS
from hwcaps_fs.system.bindmount import RUNTIME_DIR, runtime_name
from hwcaps_fs.system.guard import DEATH_SIGNAL, GRACE_SECONDS, UNIT_SIGNALS
from tests.builders import PRINT_EUID, compile_c, compile_level, install
from tests.mounting import (
    DEADLINE,
    ENVIRONMENT,
    GUARD_NAME,
    children_named,
    cleanup,
    daemon_pids,
    guard_pids,
    hwcaps_fs,
    is_fuse_mounted,
    mounted,
    wait_until,
)

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("fuse_ok")]

VARIANTS = ("x86-64-v2", "x86-64-v3", "x86-64-v4")

PRINT_CAPEFF = r"""
#include <stdio.h>
#include <string.h>
int main(void) {
    char line[256]; FILE *f = fopen("/proc/self/status", "r");
    while (fgets(line, sizeof line, f)) if (!strncmp(line, "CapEff:", 7)) fputs(line, stdout);
    return 0;
}
"""


def variant_path(store: Path, level: str, relpath: str) -> Path:
    return store / relpath if level == "baseline" else store / "glibc-hwcaps" / level / relpath


def make_store(binaries: Path, store: Path, name: str = "bin/foo") -> Path:
    install(compile_level(binaries, "baseline"), store / name)
    for level in VARIANTS:
        install(compile_level(binaries, level), variant_path(store, level, name))
    return store


def privileged_programs(binaries: Path, store: Path) -> None:
    suid = install(compile_c(PRINT_EUID, binaries / "euid", []), store / "bin/suid")
    os.chown(suid, 0, 0)
    suid.chmod(0o4755)
    caps = install(compile_c(PRINT_CAPEFF, binaries / "capeff", []), store / "bin/caps")
    subprocess.run(["setcap", "cap_net_raw+ep", str(caps)], check=True, timeout=DEADLINE)


def run(*command: str | Path, user: str | None = None) -> str:
    prefix = ["runuser", "-u", user, "--"] if user else []
    result = subprocess.run([*prefix, *map(str, command)], capture_output=True, text=True,
                            timeout=DEADLINE, check=True)
    return result.stdout.strip()


def expect_errno(code: int, action: object, *args: object) -> None:
    with pytest.raises(OSError) as caught:
        action(*args)  # type: ignore[operator]
    assert caught.value.errno == code, caught.value


@pytest.mark.usefixtures("both_exec_paths")
def test_serves_the_best_variant_read_only(binaries: Path, tmp_path: Path, level: str) -> None:
    store = make_store(binaries, tmp_path / "store")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(store, mnt) as mount:
        foo = mnt / "bin/foo"
        assert run(foo) == level
        assert sorted(os.listdir(mnt)) == ["bin"]
        served = variant_path(store, level, "bin/foo")
        real, seen = served.stat(), foo.stat()
        # pytest's directories are 0700: only their owner can reach the file, so only the
        # owner's permissions are shown.
        assert (seen.st_mode, seen.st_size, seen.st_mtime_ns) == (
            real.st_mode & ~0o077, real.st_size, real.st_mtime_ns)
        assert foo.stat().st_ino == seen.st_ino
        assert foo.read_bytes() == served.read_bytes()
        assert os.getxattr(foo, "user.hwcaps.level") == level.encode()
        assert os.getxattr(foo, "user.hwcaps.source") == os.fsencode(
            served.relative_to(store))
        assert {"user.hwcaps.level", "user.hwcaps.source"} <= set(os.listxattr(foo))
        expect_errno(errno.EOPNOTSUPP, os.getxattr, foo, "security.capability")
        expect_errno(errno.ENODATA, os.getxattr, foo, "user.hwcaps.none")

        for action, args in [
            (os.open, (foo, os.O_WRONLY)), (os.open, (mnt / "bin/new", os.O_CREAT | os.O_WRONLY)),
            (os.mkdir, (mnt / "new",)), (os.unlink, (foo,)), (os.rmdir, (mnt / "bin",)),
            (os.rename, (foo, mnt / "bin/bar")), (os.symlink, ("x", mnt / "bin/l")),
            (os.link, (foo, mnt / "bin/h")), (os.chmod, (foo, 0o700)),
            (os.truncate, (foo, 0)), (os.utime, (foo,)),
            (os.setxattr, (foo, "user.x", b"1")), (os.removexattr, (foo, "user.hwcaps.level")),
        ]:
            expect_errno(errno.EROFS, action, *args)

        again = hwcaps_fs("mount", "--root", str(store), str(mnt))
        assert again.returncode == 4 and "already mounted" in again.stderr
        assert mount.stop() == 0
    assert not is_fuse_mounted(mnt)
    assert "Traceback" not in mount.log_text()


def test_level_option_caps_the_level(binaries: Path, tmp_path: Path) -> None:
    store = make_store(binaries, tmp_path / "store")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(store, mnt, "-o", "level=x86-64-v2"):
        assert run(mnt / "bin/foo") == "x86-64-v2"
        assert os.getxattr(mnt / "bin/foo", "user.hwcaps.level") == b"x86-64-v2"


@pytest.mark.usefixtures("both_exec_paths")
def test_other_users_and_privileged_programs(binaries: Path, public: Path, level: str) -> None:
    store = make_store(binaries, public / "store")
    privileged_programs(binaries, store)
    mnt = public / "mnt"
    mnt.mkdir()
    with mounted(store, mnt):
        assert sorted(run("ls", mnt / "bin", user="nobody").split()) == ["caps", "foo", "suid"]
        assert run(mnt / "bin/foo", user="nobody") == level
        assert stat.S_ISREG(os.lstat(mnt / "bin/foo").st_mode)
        assert os.readlink(mnt / "bin/suid") == str(store / "bin/suid")
        assert run(mnt / "bin/suid", user="nobody") == "euid=0"
        assert run(mnt / "bin/caps", user="nobody") == "CapEff:\t0000000000002000"


def test_in_place_over_a_populated_directory(binaries: Path, public: Path, level: str) -> None:
    store = make_store(binaries, public / "store")
    privileged_programs(binaries, store)
    install(compile_level(binaries, "baseline", text="plain"), store / "bin/plain")
    with mounted(store, store) as mount:
        assert sorted(os.listdir(store)) == ["bin"]
        assert run(store / "bin/foo") == level
        assert run(store / "bin/plain") == "plain"
        bind = Path(RUNTIME_DIR, runtime_name(str(store)))
        assert os.readlink(store / "bin/suid") == str(bind / "bin/suid")
        assert run(store / "bin/suid", user="nobody") == "euid=0"
        assert run(store / "bin/caps", user="nobody") == "CapEff:\t0000000000002000"
        assert (bind / "glibc-hwcaps").is_dir()
        assert mount.stop() == 0
    assert "glibc-hwcaps" in os.listdir(store)
    assert not bind.exists()


@pytest.mark.parametrize("ending", ["SIGTERM", "the view unmounted"])
def test_in_place_ends_cleanly_after_its_bind_mount_was_unmounted(binaries: Path,
                                                                   public: Path,
                                                                   ending: str) -> None:
    """At shutdown systemd unmounts the bind mount (a mount unit of its own) while the daemon
    still serves; the daemon, stopped or left by its view, then removes what is left without
    a word: no mount, no directory. (A store every user may reach: only those have one.)"""
    store = make_store(binaries, public / "store")
    bind = Path(RUNTIME_DIR, runtime_name(str(store)))
    with mounted(store, store) as mount:
        subprocess.run(["umount", str(bind)], check=True, timeout=DEADLINE)
        if ending == "SIGTERM":
            assert mount.stop() == 0
        else:
            subprocess.run(["umount", str(store)], check=True, timeout=DEADLINE)
            assert mount.process.wait(timeout=DEADLINE) == 0
        assert not bind.exists()
        assert "bind mount" not in mount.log_text(), mount.log_text()


def test_in_place_keeps_symlinks_that_leave_the_directory(binaries: Path, public: Path,
                                                          level: str) -> None:
    """/usr/bin/awk -> /etc/alternatives/awk and friends: an in-place view shows every symlink
    it does not follow exactly as it is, so no name of the plain directory goes missing."""
    store = make_store(binaries, public / "store")
    outside = install(compile_level(binaries, "baseline", text="outside"), public / "alt/prog")
    (store / "bin/awk").symlink_to(outside)
    (store / "bin/dangling").symlink_to("/nonexistent/target")
    (store / "bin/inside").symlink_to("foo")
    with mounted(store, store):
        assert os.readlink(store / "bin/awk") == str(outside)
        assert run(store / "bin/awk") == "outside"
        assert os.readlink(store / "bin/dangling") == "/nonexistent/target"
        assert os.readlink(store / "bin/inside") == "foo"
        assert run(store / "bin/inside") == level  # through the view: foo's best variant


@pytest.mark.usefixtures("both_exec_paths")
def test_symlinks_presentation(binaries: Path, tmp_path: Path, level: str) -> None:
    store = make_store(binaries, tmp_path / "store")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(store, mnt, "-o", "presentation=symlinks,xattr=off"):
        assert os.readlink(mnt / "bin/foo") == str(variant_path(store, level, "bin/foo"))
        assert run(mnt / "bin/foo") == level
        expect_errno(errno.EOPNOTSUPP, os.getxattr, mnt / "bin", "user.hwcaps.level")


@pytest.mark.usefixtures("both_exec_paths")
def test_live_updates_without_a_failed_exec(binaries: Path, tmp_path: Path, level: str) -> None:
    store = make_store(binaries, tmp_path / "store")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    foo = mnt / "bin/foo"
    updated = compile_level(binaries, level, text="updated")
    with mounted(store, mnt):
        old_bytes = foo.read_bytes()
        held = foo.open("rb")
        outputs: list[tuple[float, str]] = []
        failures: list[str] = []
        stop = threading.Event()

        def exec_loop() -> None:
            while not stop.is_set():
                result = subprocess.run([foo], capture_output=True, text=True,
                                        timeout=DEADLINE, check=False)
                if result.returncode:
                    failures.append(result.stderr)
                outputs.append((time.monotonic(), result.stdout.strip()))

        thread = threading.Thread(target=exec_loop)
        thread.start()
        try:
            wait_until(lambda: len(outputs) > 5, DEADLINE, "the exec loop")
            target = variant_path(store, level, "bin/foo")
            install(updated, target.with_name(".foo.new")).rename(target)
            renamed = time.monotonic()
            took = wait_until(lambda: any(when > renamed and text == "updated"
                                          for when, text in outputs), 5, "the new variant")
            wait_until(lambda: outputs[-1][1] == "updated", 5, "only the new variant")
        finally:
            stop.set()
            thread.join(DEADLINE)
        assert failures == []
        assert took < 1.0
        assert held.read() == old_bytes
        held.close()

        install(compile_level(binaries, "x86-64-v2", text="new"),
                variant_path(store, "x86-64-v2", "sbin/new"))
        wait_until(lambda: (mnt / "sbin/new").exists(), 1.0, "a new name in a new directory")
        assert run(mnt / "sbin/new") == "new"
        shutil.rmtree(store / "glibc-hwcaps/x86-64-v2/sbin")
        wait_until(lambda: not (mnt / "sbin").exists(), 1.0, "the removal")


@pytest.mark.usefixtures("both_exec_paths")
def test_a_listed_name_replaced_before_its_first_read_fails_no_exec(
        binaries: Path, tmp_path: Path, level: str) -> None:
    """A listing hands the kernel the entries of a directory (READDIRPLUS): a name listed,
    then renamed over in the store and executed at once, before the daemon has followed the
    change, runs the old file or the new one, never fails (with the fast path no OPEN
    reaches the daemon, and the first READ asked for a file no longer there: EIO)."""
    if level == "x86-64":
        pytest.skip("this CPU serves no variant to replace")
    names = [f"bin/name{i}" for i in range(6)]
    store = tmp_path / "store"
    for name in names:
        make_store(binaries, store, name)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    new = compile_level(binaries, level, text="new")
    with mounted(store, mnt):
        assert sorted(os.listdir(mnt / "bin")) == sorted(Path(name).name for name in names)
        for name in names:
            served = variant_path(store, level, name)
            install(new, served.with_name(".new")).rename(served)
            result = subprocess.run([mnt / name], capture_output=True, text=True,
                                    timeout=DEADLINE, check=False)
            assert (result.returncode, result.stderr) == (0, ""), (name, result)
            assert result.stdout.strip() in (level, "new")
        wait_until(lambda: all(run(mnt / name) == "new" for name in names), DEADLINE,
                   "the view to serve the new files")


@pytest.mark.usefixtures("both_exec_paths")
def test_removing_the_served_variant_fails_no_exec(binaries: Path, tmp_path: Path,
                                                   level: str) -> None:
    """Until the daemon follows a change, the view serves what it scanned: a variant removed
    before anything read it must still run (the soak found execs failing with ENOENT when
    backing files were only opened on the first read)."""
    if level == "x86-64":
        pytest.skip("this CPU serves no variant to remove")
    store = make_store(binaries, tmp_path / "store")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    served = variant_path(store, level, "bin/foo")
    fresh = compile_level(binaries, level, text="fresh")
    with mounted(store, mnt):
        for _ in range(5):
            install(fresh, served.with_name(".foo.new")).rename(served)
            wait_until(lambda: os.getxattr(mnt / "bin/foo", "user.hwcaps.level")
                       == level.encode(), DEADLINE, "the view to serve the new file")
            served.unlink()
            assert run(mnt / "bin/foo") in ("fresh", *VARIANTS, "baseline")
            wait_until(lambda: run(mnt / "bin/foo") != "fresh", DEADLINE, "the removal")


def test_background_mount_and_umount(binaries: Path, tmp_path: Path, level: str) -> None:
    store = make_store(binaries, tmp_path / "store")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        result = hwcaps_fs("mount", "--root", str(store), str(mnt))
        assert result.returncode == 0, result.stderr
        assert run(mnt / "bin/foo") == level
        assert len(daemon_pids(mnt)) == 1
        result = hwcaps_fs("umount", str(mnt))
        assert result.returncode == 0, result.stderr
        assert not is_fuse_mounted(mnt)
        wait_until(lambda: not daemon_pids(mnt), DEADLINE, "the daemon to exit")
        missing = hwcaps_fs("mount", "--root", str(tmp_path / "none"), str(mnt))
        assert (missing.returncode, missing.stderr.count("\n")) == (3, 1)
        # mount(8)'s order, ROOT MOUNTPOINT, is --root ROOT MOUNTPOINT
        result = hwcaps_fs("mount", str(store), str(mnt))
        assert result.returncode == 0, result.stderr
        assert run(mnt / "bin/foo") == level
        assert hwcaps_fs("umount", str(mnt)).returncode == 0
        both = hwcaps_fs("mount", "--root", str(store), str(store), str(mnt))
        assert (both.returncode, both.stderr.count("\n")) == (2, 1)
    finally:
        cleanup(mnt)


def test_kill_9_with_auto_unmount_brings_the_directory_back(binaries: Path,
                                                             public: Path) -> None:
    store = make_store(binaries, public / "store")
    with mounted(store, store, "-o", "auto_unmount") as mount:
        assert "glibc-hwcaps" not in os.listdir(store)
        mount.stop(signal.SIGKILL)
        wait_until(lambda: not is_fuse_mounted(store), 3, "fusermount3 to unmount")
        assert "glibc-hwcaps" in os.listdir(store)


def test_kill_9_after_a_listing_always_brings_the_directory_back(binaries: Path,
                                                                 public: Path) -> None:
    """A listing just before the kill is what made fusermount3's watcher give up (its open
    of the mountpoint then ends in ECONNABORTED, not ENOTCONN): the daemon's unmount guard
    removes the dead mount every time, and exits."""
    store = make_store(binaries, public / "store")
    for _ in range(6):
        with mounted(store, store, "-o", "auto_unmount") as mount:
            assert "glibc-hwcaps" not in os.listdir(store)
            mount.stop(signal.SIGKILL)
            wait_until(lambda: not is_fuse_mounted(store), 3, "the dead mount to go")
            assert "glibc-hwcaps" in os.listdir(store)
            wait_until(lambda: not guard_pids(store), DEADLINE, "the guard to exit")


def _status(pid: int) -> dict[str, str]:
    """/proc/PID/status: its fields by name."""
    return dict(line.split(":\t", 1) for line in
                Path(f"/proc/{pid}/status").read_text().splitlines())


def test_the_unmount_guard_ends_with_its_daemon(binaries: Path, public: Path) -> None:
    """Only auto_unmount mounts have a guard; it ignores SIGTERM (systemd sends it to the
    whole unit) but exits once its daemon has, after SIGTERM or an unmount."""
    store = make_store(binaries, public / "store")
    with mounted(store, store):
        assert guard_pids(store) == []
    with mounted(store, store, "-o", "auto_unmount") as mount:
        [guard] = guard_pids(store)
        ignored = int(_status(guard)["SigIgn"], 16)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            assert ignored & (1 << (signum - 1)), signum
        assert mount.stop() == 0
        wait_until(lambda: not guard_pids(store), DEADLINE, "the guard to exit")
        assert not is_fuse_mounted(store)
    with mounted(store, store, "-o", "auto_unmount") as mount:
        assert len(guard_pids(store)) == 1
        assert hwcaps_fs("umount", str(store)).returncode == 0
        assert mount.process.wait(DEADLINE) == 0
        wait_until(lambda: not guard_pids(store), DEADLINE, "the guard to exit")
        assert not is_fuse_mounted(store) and daemon_pids(store) == []


def _guard_state(guard: int) -> tuple[str, int]:
    """The state letter of the guard process ``guard`` and how often it has slept so far."""
    status = _status(guard)
    return status["State"][0], int(status["voluntary_ctxt_switches"])


def test_the_unmount_guard_sleeps_while_its_daemon_lives(binaries: Path, public: Path) -> None:
    """The guard does not wake up periodically (an always-on mount must not wake the CPU):
    the kernel wakes it when its daemon's main thread ends (PR_SET_PDEATHSIG). The same
    signal from elsewhere (``systemctl kill`` signals the whole unit) only makes it look
    whether the daemon is stuck, and it sleeps again."""
    store = make_store(binaries, public / "store")
    with mounted(store, store, "-o", "auto_unmount") as mount:
        [guard] = guard_pids(store)
        for stray in (False, True):
            if stray:
                os.kill(guard, DEATH_SIGNAL)
                time.sleep(2 * GRACE_SECONDS)
            _, before = _guard_state(guard)
            time.sleep(2)
            state, after = _guard_state(guard)
            assert (state, after - before <= 1) == ("S", True), (stray, before, after)
        assert guard_pids(store) == [guard] and "glibc-hwcaps" not in os.listdir(store)
        assert mount.stop() == 0
        wait_until(lambda: not guard_pids(store), DEADLINE, "the guard to exit")


def test_the_unmount_guard_outlives_the_signals_sent_to_its_unit(binaries: Path,
                                                                 public: Path) -> None:
    """systemd sends its stop signals to every process of the unit, ``systemctl kill -s``
    any: the guard ignores each that would end it (the daemon's stop signals among them), so
    that it is there when the daemon is gone."""
    assert set(STOP_SIGNALS) - {DEATH_SIGNAL} <= set(UNIT_SIGNALS)
    store = make_store(binaries, public / "store")
    with mounted(store, store, "-o", "auto_unmount") as mount:
        [guard] = guard_pids(store)
        for signum in UNIT_SIGNALS:
            os.kill(guard, signum)
        time.sleep(0.2)
        assert guard_pids(store) == [guard] and "glibc-hwcaps" not in os.listdir(store)
        assert mount.stop() == 0
        wait_until(lambda: not guard_pids(store), DEADLINE, "the guard to exit")


#: A stand-in for a daemon killed while one of its threads waits in the kernel for a FUSE
#: request nobody will answer: it starts the guard of the mount at argv[1] and tells it that
#: mount's id, says so on stdout, waits for a line on stdin, then looks a name up in the mount
#: from a thread (its daemon is stopped: the lookup waits) and ends its main thread alone. It
#: is left a zombie whose pipe to the guard stays open, as long as the lookup waits.
STUCK_DAEMON = r"""
import ctypes, os, sys, threading, time
from hwcaps_fs.system.guard import Guard
mountpoint = sys.argv[1]
Guard(mountpoint).mounted(mountpoint)
print(flush=True)
sys.stdin.readline()
def lookup():
    try:
        os.stat(os.path.join(mountpoint, "never-looked-up"))
    finally:
        os._exit(0)
thread = threading.Thread(target=lookup)
thread.start()
while not any(word in open(f"/proc/self/task/{thread.native_id}/wchan").read()
              for word in ("request_wait_answer", "fuse")):
    time.sleep(0.01)
ctypes.CDLL(None).syscall(60, 0)  # SYS_exit: this thread ends, the process lives on
"""


def _ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_unmount_guard_aborts_a_daemon_stuck_in_the_kernel(binaries: Path,
                                                                public: Path) -> None:
    """A daemon whose main thread has ended while another waits in the kernel for a request
    never answered (STUCK_DAEMON; the real daemon gets there after a ``kill -9`` with an
    entry invalidation waiting, see tests/test_mount_shutdown.py): its guard, woken by the
    main thread's end, aborts the connection, which ends the wait and the daemon, then
    removes the dead mount and exits."""
    store = make_store(binaries, public / "store")
    mnt = public / "mnt"
    mnt.mkdir()
    with mounted(store, mnt) as server:
        daemon = subprocess.Popen([sys.executable, "-c", STUCK_DAEMON, str(mnt)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  env=ENVIRONMENT, cwd="/")
        try:
            assert daemon.stdout is not None and daemon.stdin is not None
            assert daemon.stdout.readline() == b"\n"
            [guard] = children_named(daemon.pid, GUARD_NAME)
            server.process.send_signal(signal.SIGSTOP)  # nothing answers the lookup
            daemon.stdin.write(b"\n")
            daemon.stdin.flush()
            assert daemon.wait(DEADLINE) == 0
            wait_until(lambda: _ended(guard), DEADLINE, "the guard to exit")
            assert not is_fuse_mounted(mnt) and os.listdir(mnt) == []
        finally:
            server.process.send_signal(signal.SIGCONT)
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(DEADLINE)


def test_stale_mount_is_cleared(binaries: Path, tmp_path: Path, level: str) -> None:
    store = make_store(binaries, tmp_path / "store")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(store, mnt) as dead:
        dead.stop(signal.SIGKILL)
        expect_errno(errno.ENOTCONN, os.stat, mnt)
        with mounted(store, mnt) as mount:
            assert run(mnt / "bin/foo") == level
            assert "clearing a stale mount" in mount.log_text()
