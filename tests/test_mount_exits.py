"""Every way serving ends leaves the plain directory back, and what does not end it: a failed
sd_notify, SIGHUP (a rescan), ROOT renamed away (a log line), ROOT on FUSE (said at mount).
Also the bad input around mounting that used to end in a traceback."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.builders import compile_level, install, variant_store
from tests.mounting import (
    DEADLINE,
    ENVIRONMENT,
    GUARD_NAME,
    assert_one_line_error,
    children_named,
    cleanup,
    daemon_pids,
    hwcaps_fs,
    is_fuse_mounted,
    mounted,
    wait_until,
)

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("fuse_ok")]


def output(path: Path) -> str:
    result = subprocess.run([str(path)], capture_output=True, text=True, timeout=DEADLINE,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def foreground(store: Path, mnt: Path, env: dict[str, str],
               *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hwcaps_fs", "mount", "--foreground",
                             "--root", str(store), *args, str(mnt)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**ENVIRONMENT, **env},
                            cwd="/")


def test_a_failed_sd_notify_does_not_end_the_daemon(binaries: Path, public: Path,
                                                    level: str) -> None:
    store = variant_store(binaries, public / "store", "bin/foo")
    mnt = public / "mnt"
    mnt.mkdir()
    daemon = foreground(store, mnt, {"NOTIFY_SOCKET": "/nonexistent"})
    try:
        wait_until(lambda: is_fuse_mounted(mnt) or daemon.poll() is not None, DEADLINE,
                   "the mount")
        time.sleep(0.5)
        assert daemon.poll() is None
        assert output(mnt / "bin/foo") == level
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=DEADLINE)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(DEADLINE)
        cleanup(mnt)
    assert daemon.returncode == 0, stderr
    assert "cannot notify /nonexistent" in stderr
    assert "Traceback" not in stderr
    assert not is_fuse_mounted(mnt)


#: Runs the command line with the change follower replaced by one that fails: an exception
#: in the serving loop, as a bug would raise it.
FAILING_LOOP = """
import sys, trio
from hwcaps_fs.commands import cli
from hwcaps_fs.fuse import serve
async def fail(self):
    await trio.sleep(1)
    raise RuntimeError("a bug in the serving loop")
serve._Updates.follow = fail
sys.exit(cli.main(sys.argv[1:]))
"""


def test_an_exception_in_the_serving_loop_unmounts(binaries: Path, public: Path) -> None:
    store = variant_store(binaries, public / "store", "bin/foo")
    mnt = public / "mnt"
    mnt.mkdir()
    try:
        result = subprocess.run([sys.executable, "-c", FAILING_LOOP, "mount", "--foreground",
                                 "--root", str(store), str(mnt)], capture_output=True,
                                text=True, timeout=DEADLINE * 2, env=ENVIRONMENT, cwd="/",
                                check=False)
        assert result.returncode == 70, result.stderr
        assert "internal error" in result.stderr
        assert not is_fuse_mounted(mnt)
        assert os.listdir(mnt) == []
    finally:
        cleanup(mnt)


@pytest.mark.parametrize("recovery", ["mount", "umount"])
def test_killing_daemon_and_fusermount_together_then_recovering(
        binaries: Path, public: Path, level: str, recovery: str) -> None:
    """What ``systemctl kill -s KILL`` does to a unit (its fusermount3 and the daemon's
    unmount guard die with it): nothing is left to unmount, so the mount is dead (ENOTCONN)
    until the next start, which detaches it and serves again, or until ``hwcaps-fs umount``,
    which leaves the plain directory."""
    store = variant_store(binaries, public / "store", "bin/foo")
    mnt = public / "mnt"
    mnt.mkdir()
    try:
        result = hwcaps_fs("mount", "-o", "auto_unmount", "--root", str(store), str(mnt))
        assert result.returncode == 0, result.stderr
        [daemon] = daemon_pids(mnt)
        helpers = children_named(daemon, "fusermount3")
        assert helpers, "no fusermount3 watching the daemon (auto_unmount)"
        [guard] = children_named(daemon, GUARD_NAME)
        for pid in (guard, *helpers, daemon):  # the watchers first: none may see it die
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not daemon_pids(mnt), DEADLINE, "the daemon to die")
        with pytest.raises(OSError) as dead:
            os.stat(mnt / "bin")
        assert dead.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        if recovery == "umount":
            assert hwcaps_fs("umount", str(mnt)).returncode == 0
            assert os.listdir(mnt) == []
            return
        again = hwcaps_fs("mount", "--root", str(store), str(mnt))
        assert again.returncode == 0, again.stderr
        assert "clearing a stale mount" in again.stderr
        assert output(mnt / "bin/foo") == level
    finally:
        cleanup(mnt)


@pytest.mark.parametrize("signum", [signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                                    signal.SIGALRM, signal.SIGXCPU])
def test_any_signal_that_would_end_the_daemon_unmounts(binaries: Path, public: Path,
                                                        signum: signal.Signals) -> None:
    """Without auto_unmount (no guard), where such a signal used to leave a dead mount."""
    store = variant_store(binaries, public / "store", "bin/foo")
    mnt = public / "mnt"
    mnt.mkdir()
    with mounted(store, mnt) as mount:
        assert mount.stop(signum) == 0
        assert f"{signum.name}: unmounting" in mount.log_text()
        assert not is_fuse_mounted(mnt)
        assert os.listdir(mnt) == []


def test_sighup_rescans_and_keeps_serving(binaries: Path, public: Path, level: str) -> None:
    store = variant_store(binaries, public / "store", "bin/foo")
    mnt = public / "mnt"
    mnt.mkdir()
    with mounted(store, mnt, "-o", "debug") as mount:
        mount.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP: rescanning" in mount.log_text(), DEADLINE, "the rescan")
        assert mount.process.poll() is None
        assert output(mnt / "bin/foo") == level
        assert mount.stop() == 0


def test_root_renamed_away_is_said_and_the_mounted_directory_stays_served(
        binaries: Path, public: Path, level: str) -> None:
    store = variant_store(binaries, public / "store", "bin/foo")
    mnt = public / "mnt"
    mnt.mkdir()
    with mounted(store, mnt) as mount:
        store.rename(public / "store.old")
        (public / "store").mkdir()
        wait_until(lambda: "was renamed or replaced" in mount.log_text(), DEADLINE,
                   "the log line")
        assert output(mnt / "bin/foo") == level
    cleanup(public / "store.old")


def test_root_on_fuse_is_said_at_mount(binaries: Path, public: Path, level: str) -> None:
    store = variant_store(binaries, public / "store", "bin/foo")
    (public / "first").mkdir()
    (public / "second").mkdir()
    try:
        with mounted(store, public / "first"), \
                mounted(public / "first", public / "second") as second:
            assert "is on a FUSE file system" in second.log_text()
            assert output(public / "second/bin/foo") == level
    finally:
        cleanup(public / "second")
        cleanup(public / "first")


def test_an_in_place_mountpoint_with_a_long_escaped_name(binaries: Path, public: Path,
                                                         level: str) -> None:
    deep = public / ("d" * 120) / ("\u00e9" * 60) / "bin"
    install(compile_level(binaries, "baseline", mark="mneeded"), deep / "foo")
    try:
        result = hwcaps_fs("mount", str(deep))
        assert result.returncode == 0, result.stderr
        assert output(deep / "foo") == "baseline"
        assert hwcaps_fs("umount", str(deep)).returncode == 0
        wait_until(lambda: not daemon_pids(deep), DEADLINE, "the daemon to exit")
    finally:
        cleanup(deep)
    assert not is_fuse_mounted(deep)


def test_a_full_runtime_directory_is_one_line(binaries: Path, public: Path) -> None:
    store = variant_store(binaries, public / "store", "bin/foo")
    script = ("mkdir -p /run/hwcaps-fs && mount -t tmpfs -o size=4k,nr_inodes=1 tmpfs "
              f"/run/hwcaps-fs && exec {sys.executable} -m hwcaps_fs mount {store}")
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, timeout=DEADLINE, env=ENVIRONMENT,
                            cwd="/", check=False)
    assert_one_line_error(result, 4)
    assert "/run/hwcaps-fs/" in result.stderr
    assert "No space left on device" in result.stderr


@pytest.mark.parametrize("config", ["/dev/zero", "fifo"])
def test_a_config_that_is_no_regular_file_is_one_line(public: Path, config: str) -> None:
    if config == "fifo":
        config = str(public / "fifo")
        os.mkfifo(config)
    result = hwcaps_fs("levels", "--config", config)
    assert_one_line_error(result, 2)
    assert f"{config}: not a regular file" in result.stderr
