"""Trust, mount side: what a view must carry over from the system and refuse from the command
line, whatever a local user does. Attackers are real non-root users (tests.users).

* an in-place view keeps every restriction of the mount its directory is on (nosuid, noexec);
* a restrictive umask does not lock other users out of privileged programs;
* diagnostic flags (--cpuinfo, --auxv, --machine) cannot choose what a mount serves;
* the lowest of ``--level`` and ``-o level=`` wins;
* mountpoints: no empty ones, canonical paths, no stacking (not even racing), and ``umount``
  only removes views.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hwcaps_fs.system.bindmount import RUNTIME_DIR, runtime_name
from hwcaps_fs.system.mountinfo import mounts_at
from tests.builders import PRINT_EUID, compile_c, variant_store
from tests.mounting import (
    DEADLINE,
    ENVIRONMENT,
    assert_one_line_error,
    cleanup,
    daemon_pids,
    hwcaps_fs,
    is_fuse_mounted,
    mounted,
    wait_until,
)
from tests.test_mount_faults import slow_store
from tests.users import User

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("fuse_ok")]


def setuid_program(binaries: Path, path: Path) -> Path:
    """A root-owned setuid program at ``path`` that prints its effective uid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    compile_c(PRINT_EUID, binaries / "euid", [])
    path.write_bytes((binaries / "euid").read_bytes())
    os.chown(path, 0, 0)
    path.chmod(0o4755)
    return path


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(map(str, command)), capture_output=True, text=True,
                          timeout=DEADLINE, check=False)


def denied(result: subprocess.CompletedProcess[str]) -> bool:
    """Whether the exec of ``result`` was refused (runuser and env say why on stderr)."""
    return result.returncode != 0 and "Permission denied" in result.stderr


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` with ``options`` for the ``with`` body."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"mode=0755,{options}", "tmpfs", str(path)],
                   check=True, timeout=DEADLINE)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=DEADLINE)


# -- in place: the bind mount carries the source mount's restrictions ---------------------


def test_in_place_on_a_nosuid_mount_grants_no_privilege(binaries: Path, public: Path,
                                                         attacker: User) -> None:
    with tmpfs(public / "fs", "nosuid,nodev") as fs:
        store = variant_store(binaries, fs / "store", "bin/foo")
        setuid_program(binaries, store / "bin/suid")
        direct = attacker.run(store / "bin/suid", check=True).stdout.strip()
        assert direct == f"euid={attacker.uid}"
        with mounted(store, store):
            assert os.path.islink(store / "bin/suid")
            assert attacker.run(store / "bin/suid", check=True).stdout.strip() == direct
            bind = Path(RUNTIME_DIR, runtime_name(str(store)))
            flags = os.statvfs(bind).f_flag
            assert flags & os.ST_NOSUID and flags & os.ST_NODEV and flags & os.ST_RDONLY


def test_in_place_on_a_noexec_mount_executes_nothing(binaries: Path, public: Path,
                                                     attacker: User) -> None:
    with tmpfs(public / "fs", "noexec") as fs:
        store = variant_store(binaries, fs / "store", "bin/foo")
        setuid_program(binaries, store / "bin/suid")
        assert denied(attacker.run(store / "bin/foo"))
        with mounted(store, store):
            for name in ("bin/suid", "bin/foo"):
                assert denied(attacker.run(store / name)), name
                assert denied(run("env", store / name)), name
            assert (store / "bin/foo").read_bytes()  # still readable


def test_in_place_below_a_private_directory_makes_no_bind_mount(binaries: Path, public: Path,
                                                                attacker: User) -> None:
    """The bind mount privileged programs lead into shows ROOT without the directories above
    it: below one that keeps users out, it would let them read the store. There is none then,
    and privileged programs are plain files (they lose their privileges, as said)."""
    private = public / "private"
    private.mkdir(mode=0o700)
    store = variant_store(binaries, private / "store", "bin/foo")
    setuid_program(binaries, store / "bin/suid")
    bind = Path(RUNTIME_DIR, runtime_name(str(store)))
    with mounted(store, store) as mount:
        assert not os.path.islink(store / "bin/suid")
        assert not bind.exists()
        assert attacker.run("ls", bind / "bin").returncode != 0
        assert run(store / "bin/suid").stdout.strip() == "euid=0"  # root runs it, as root
    assert "a directory above " + str(store) + " keeps some users out" in mount.log_text()


@pytest.mark.parametrize("where", ["in place", "elsewhere"])
def test_noexec_asked_executes_nothing_not_even_privileged_programs(
        binaries: Path, public: Path, attacker: User, where: str) -> None:
    """Privileged programs are links to the real file, which an exec would follow out of a
    noexec view: with ``-o noexec`` they are plain files (privileges lost, execs refused)."""
    store = variant_store(binaries, public / "store", "bin/foo")
    setuid_program(binaries, store / "bin/suid")
    mnt = store if where == "in place" else public / "mnt"
    mnt.mkdir(exist_ok=True)
    with mounted(store, mnt, "-o", "noexec") as mount:
        for name in ("bin/suid", "bin/foo"):
            assert not os.path.islink(mnt / name), name
            assert denied(attacker.run(mnt / name)), name
            assert denied(run("env", mnt / name)), name
        assert (mnt / "bin/suid").read_bytes()  # still readable
    assert "lose their privileges (-o noexec: a link would run the real file)" in mount.log_text()


# -- a restrictive umask -----------------------------------------------------------------


UMASK_SCRIPT = r"""
set -e
mount -t tmpfs -o mode=0755 tmpfs /run
umask 077
trap '"$PYTHON" -m hwcaps_fs umount "$STORE" || umount -l "$STORE"' EXIT
"$PYTHON" -m hwcaps_fs mount "$STORE"
runuser -u "$ATTACKER" -- "$STORE/bin/suid"
stat -c %a /run/hwcaps-fs
"""


def test_a_restrictive_umask_keeps_privileged_programs_usable(binaries: Path, public: Path,
                                                              attacker: User) -> None:
    """Under umask 077 the in-place view's bind mount must still be reachable by every user
    (sudo, su and passwd are served through it). /run is a fresh tmpfs in a private mount
    namespace, so /run/hwcaps-fs is created by the mount under test."""
    store = variant_store(binaries, public / "store", "bin/foo")
    setuid_program(binaries, store / "bin/suid")
    environment = {**ENVIRONMENT, "PYTHON": sys.executable, "STORE": str(store),
                   "ATTACKER": attacker.name}
    try:
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                 UMASK_SCRIPT], capture_output=True, text=True, env=environment,
                                timeout=2 * DEADLINE, check=False, cwd="/")
    finally:
        cleanup(store)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["euid=0", "755"]


# -- diagnostic flags --------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--cpuinfo", "--auxv", "--machine"])
def test_diagnostic_flags_do_not_exist_for_mount(binaries: Path, public: Path,
                                                 flag: str) -> None:
    store = variant_store(binaries, public / "store", "bin/foo")
    value = "x86_64" if flag == "--machine" else "/proc/cpuinfo"
    mnt = public / "mnt"
    mnt.mkdir()
    refused = hwcaps_fs("mount", flag, value, "--root", str(store), str(mnt))
    assert_one_line_error(refused, 2)
    assert flag in refused.stderr
    assert not is_fuse_mounted(mnt)
    assert_one_line_error(hwcaps_fs("run", flag, value, "--root", str(store), "--", "true"), 2)
    assert hwcaps_fs("which", flag, value, str(store), "bin/foo").returncode == 0


# -- capping -----------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["--level first", "-o level= first"])
def test_the_lowest_level_override_wins(binaries: Path, public: Path, level: str,
                                        order: str) -> None:
    if level == "x86-64":
        pytest.skip("this CPU serves no variant level to cap")
    store = variant_store(binaries, public / "store", "bin/foo")
    mnt = public / "mnt"
    mnt.mkdir()
    low, high = ("--level", "x86-64-v2"), ("-o", "level=x86-64-v4")
    if order != "--level first":
        low, high = ("-o", "level=x86-64-v2"), ("--level", "x86-64-v4")
    with mounted(store, mnt, *low, *high):
        assert run(mnt / "bin/foo").stdout.strip() == "x86-64-v2"


def test_a_bad_level_option_names_the_option(public: Path) -> None:
    for name in ("store", "mnt"):
        (public / name).mkdir()
    refused = hwcaps_fs("mount", "--root", str(public / "store"), "-o", "level=x86-64-v9",
                        str(public / "mnt"))
    assert_one_line_error(refused, 2)
    assert "-o level=" in refused.stderr and "--level" not in refused.stderr


# -- mountpoints -------------------------------------------------------------------------


def test_empty_paths_are_refused(binaries: Path, public: Path) -> None:
    """An empty MOUNTPOINT would be the working directory (``/`` for a unit)."""
    store = variant_store(binaries, public / "store", "bin/foo")
    mnt = public / "mnt"
    mnt.mkdir()
    for args in (["--root", str(store), ""], ["--root", "", str(mnt)]):
        refused = subprocess.run([sys.executable, "-m", "hwcaps_fs", "mount", *args],
                                 capture_output=True, text=True, timeout=DEADLINE, check=False,
                                 env=ENVIRONMENT, cwd=mnt)
        try:
            assert_one_line_error(refused, 3)
            assert not is_fuse_mounted(mnt)
        finally:
            cleanup(mnt)


@pytest.mark.parametrize("spelling", ["a symlink", "//path"])
def test_one_mountpoint_however_spelled(binaries: Path, public: Path, spelling: str) -> None:
    store = variant_store(binaries, public / "store", "bin/foo")
    mnt = public / "mnt"
    mnt.mkdir()
    (public / "link").symlink_to(mnt)
    other = str(public / "link") if spelling == "a symlink" else "/" + str(mnt)
    with mounted(store, mnt):
        stacked = hwcaps_fs("mount", "--root", str(store), other)
        assert_one_line_error(stacked, 4)
        assert "already mounted" in stacked.stderr
        assert len(mounts_at(str(mnt))) == 1
    assert hwcaps_fs("mount", "--root", str(store), other).returncode == 0
    try:
        assert is_fuse_mounted(mnt)
        assert hwcaps_fs("umount", other).returncode == 0
        assert not is_fuse_mounted(mnt)
    finally:
        cleanup(mnt)


def test_no_view_stacks_on_an_in_place_view(binaries: Path, public: Path) -> None:
    store = variant_store(binaries, public / "store", "bin/foo")
    with mounted(store, store):
        for options in ("subtype=hwcaps-fs.other", "fsname=other"):
            stacked = hwcaps_fs("mount", "-o", options, str(store))
            assert stacked.returncode in (2, 4), stacked
            assert_one_line_error(stacked, stacked.returncode)
            assert len(mounts_at(str(store))) == 1


def test_concurrent_mounts_of_one_place(binaries: Path, public: Path) -> None:
    store = variant_store(binaries, public / "store", "bin/foo")
    mnt = public / "mnt"
    mnt.mkdir()
    command = [sys.executable, "-m", "hwcaps_fs", "mount", "--root", str(store), str(mnt)]
    try:
        for _ in range(3):
            racers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=ENVIRONMENT, cwd="/") for _ in range(2)]
            results = [racer.communicate(timeout=DEADLINE) for racer in racers]
            codes = sorted(racer.returncode for racer in racers)
            assert codes == [0, 4], results
            assert len(mounts_at(str(mnt))) == 1
            assert hwcaps_fs("umount", str(mnt)).returncode == 0
        # each daemon ends by itself once unmounted (a moment after umount returns)
        wait_until(lambda: not daemon_pids(mnt), DEADLINE, "the daemons to exit")
    finally:
        cleanup(mnt)


def test_umount_removes_only_views(public: Path) -> None:
    source = public / "source"
    source.mkdir()
    with slow_store(source, public / "other", "none") as other:
        refused = hwcaps_fs("umount", str(other.path))
        assert_one_line_error(refused, 4)
        assert is_fuse_mounted(other.path)
