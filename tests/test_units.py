"""The systemd units and mount(8) helpers as they are installed: `make install-units
install-helpers DESTDIR=...`, then systemd's own verifier, the helper's argument contract, and
real mounts through mount(8) with the helper in /sbin (where mount(8) looks for it).

The boot itself (units started by systemd at boot, shutdown, crash) is tests/boot/run.py
(`make boot-test`), too slow for this suite.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hwcaps_fs.system.bindmount import RUNTIME_DIR, runtime_name
from tests.builders import variant_store

REPO = Path(__file__).resolve().parent.parent
UNIT_SOURCES = sorted(REPO.glob("systemd-units/*.mount")) + sorted(
    REPO.glob("systemd-units/*.service"))
HELPERS = ("mount.hwcaps-fs", "mount.fuse.hwcaps-fs")
#: Where mount(8) finds helpers (util-linux FS_SEARCH_PATH starts with /sbin).
SBIN = Path("/sbin")
#: How a template is instantiated for verification (any escaped path will do).
TEMPLATE_INSTANCE = "opt-tools"


def make_install(destdir: Path, *targets: str, **variables: str) -> None:
    """Run this repository's install targets into ``destdir`` (a staging root)."""
    assignments = [f"{name}={value}" for name, value in variables.items()]
    result = subprocess.run(["make", "-s", "-C", str(REPO), *targets, f"DESTDIR={destdir}",
                             *assignments], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def unit_name(source: Path) -> str:
    """The name to verify ``source`` under: a template gets an instance."""
    name = source.name
    return name.replace("@.", f"@{TEMPLATE_INSTANCE}.") if "@." in name else name


def read_unit(path: Path) -> configparser.ConfigParser:
    """A unit file as sections and keys; repeated keys (After=, Before=) are joined."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


@pytest.fixture(scope="module")
def staging(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with the units and helpers installed by `make`, and a stand-in hwcaps-fs at the
    BINDIR the units name (the verifier checks that ExecStart= is executable)."""
    root = tmp_path_factory.mktemp("staging")
    make_install(root, "install-units", "install-helpers")
    program = root / "usr/local/bin/hwcaps-fs"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return root


@pytest.mark.parametrize("source", UNIT_SOURCES, ids=lambda path: path.name)
def test_systemd_analyze_verify(staging: Path, source: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    result = subprocess.run([analyze, "verify", "--man=no", f"--root={staging}",
                             unit_name(source)], capture_output=True, text=True, timeout=60,
                            cwd=staging / "etc/systemd/system")
    # Unknown keys are only warnings (exit status 0): any output at all is a finding.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.parametrize("source", UNIT_SOURCES, ids=lambda path: path.name)
def test_units_stand_aside_when_asked_or_broken(source: Path) -> None:
    """hwcaps_fs=off skips every unit; a failure never fails the boot (WantedBy, not
    RequiredBy); everything is ordered before local-fs.target (early, not after it)."""
    unit = read_unit(source)
    assert unit["Unit"]["ConditionKernelCommandLine"] == "!hwcaps_fs=off"
    assert unit["Unit"]["DefaultDependencies"] == "no"
    assert "local-fs.target" in unit["Unit"]["Before"].split()
    assert unit["Install"]["WantedBy"] == "local-fs.target"
    assert "RequiredBy" not in unit["Install"]


@pytest.mark.parametrize("source", sorted(REPO.glob("systemd-units/*.mount")),
                         ids=lambda path: path.name)
def test_mount_units_survive_a_dead_daemon(source: Path) -> None:
    """auto_unmount brings the directory back if the daemon dies; a lazy unmount is the only
    one that works over a directory umount itself runs from."""
    mount = read_unit(source)["Mount"]
    assert mount["Type"] == "fuse.hwcaps-fs"
    assert "auto_unmount" in mount["Options"].split(",")
    assert mount["LazyUnmount"] == "yes"


@pytest.mark.parametrize("source", sorted(REPO.glob("systemd-units/*.mount")),
                         ids=lambda path: path.name)
def test_mount_units_go_before_the_daemons_bind_mount(source: Path) -> None:
    """An in-place view serves setuid programs (umount among them) as symlinks into the
    daemon's bind mount of the plain directory; at shutdown that bind mount must go after the
    view, so the unit orders itself After= the bind mount's unit, named by the daemon's rule."""
    escape = shutil.which("systemd-escape")
    if escape is None:
        pytest.skip("systemd-escape is not installed (Debian package systemd)")
    where = read_unit(source)["Mount"]["Where"]
    bind = os.path.join(RUNTIME_DIR, runtime_name(where))
    escaped = subprocess.run([escape, "--path", "--suffix=mount", bind], capture_output=True,
                             text=True, check=True).stdout.strip()
    after = [line.split("=", 1)[1].split() for line in source.read_text().splitlines()
             if line.startswith("After=")]
    assert escaped in [unit for units in after for unit in units]


@pytest.mark.parametrize("source", sorted(REPO.glob("systemd-units/*.*")),
                         ids=lambda path: path.name)
def test_every_unit_stops_before_the_usr_bin_bind_mount(source: Path) -> None:
    """A daemon started while /usr/bin is served runs fusermount3 (setuid) from the /usr/bin
    view's bind mount until it ends: every unit orders itself After= that bind mount, which
    the boot test's service crash showed ("Failed unmounting" at shutdown without it)."""
    after = [unit for line in source.read_text().splitlines() if line.startswith("After=")
             for unit in line.split("=", 1)[1].split()]
    assert "run-hwcaps\\x2dfs-usr\\x2dbin.mount" in after


def test_install_names_the_configured_hwcaps_fs(tmp_path: Path) -> None:
    make_install(tmp_path, "install-units", "install-helpers", PREFIX="/opt/hw")
    helper = (tmp_path / "sbin/mount.hwcaps-fs").read_text()
    assert "CONFIGURED='/opt/hw/bin/hwcaps-fs'" in helper
    assert os.readlink(tmp_path / "sbin/mount.fuse.hwcaps-fs") == "mount.hwcaps-fs"
    service = (tmp_path / "etc/systemd/system/hwcaps-fs@.service").read_text()
    assert "ExecStart=/opt/hw/bin/hwcaps-fs mount --foreground" in service


# -- the helper's argument contract, against a program that records its argv -------------------


@pytest.fixture
def recording_helper(tmp_path: Path) -> tuple[Path, Path]:
    """(helper, record): the helper configured to run a script that writes its argv to
    ``record``, one argument per line."""
    record = tmp_path / "argv"
    program = tmp_path / "hwcaps-fs"
    program.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    program.chmod(0o755)
    return configured_helper(tmp_path / "sbin", tmp_path), record


def configured_helper(directory: Path, bindir: Path) -> Path:
    """Install both helper names into ``directory``, configured to run bindir/hwcaps-fs."""
    make_install(directory, "install-helpers", SBINDIR="/", BINDIR=str(bindir))
    return directory / "mount.hwcaps-fs"


def run_helper(helper: Path, *args: str, name: str = "mount.hwcaps-fs"
               ) -> subprocess.CompletedProcess[str]:
    # mount(8) and systemd run helpers without PATH: so does this.
    return subprocess.run([str(helper.parent / name), *args], capture_output=True, text=True,
                          timeout=30, env={})


@pytest.mark.parametrize("name", HELPERS)
def test_helper_translates_mount8_arguments(recording_helper: tuple[Path, Path],
                                            name: str) -> None:
    helper, record = recording_helper
    result = run_helper(helper, "/srv/store", "/srv/view", "-n", "-o", "allow_other,nofail",
                        "-sv", "-o", "level=x86-64-v2", "-t", "fuse.hwcaps-fs", name=name)
    assert result.returncode == 0, result.stderr
    assert record.read_text().splitlines() == [
        "mount", "--root", "/srv/store", "-o", "allow_other,nofail,level=x86-64-v2", "--",
        "/srv/view"]


def test_helper_without_options(recording_helper: tuple[Path, Path]) -> None:
    helper, record = recording_helper
    assert run_helper(helper, "/srv/store", "/srv/view").returncode == 0
    assert record.read_text().splitlines() == ["mount", "--root", "/srv/store", "--",
                                               "/srv/view"]


def test_helper_fake_mount_does_nothing(recording_helper: tuple[Path, Path]) -> None:
    """-f is mount(8)'s --fake, not FUSE's foreground: nothing may be mounted or started."""
    helper, record = recording_helper
    result = run_helper(helper, "/srv/store", "/srv/view", "-f", "-o", "allow_other")
    assert result.returncode == 0, result.stderr
    assert not record.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["/srv/store"], "usage: mount.hwcaps-fs ROOT MOUNTPOINT"),
    (["/srv/store", "/srv/view", "-N", "1234"], "-N (mount in another namespace)"),
    (["/srv/store", "/srv/view", "-x"], "unknown option -x"),
    (["/srv/store", "/srv/view", "-o"], "-o needs a value"),
])
def test_helper_refuses_bad_invocations(recording_helper: tuple[Path, Path], args: list[str],
                                        message: str) -> None:
    helper, record = recording_helper
    result = run_helper(helper, *args)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"mount.hwcaps-fs: {message}"), result.stderr
    assert not record.exists()


def test_helper_names_where_it_looked(tmp_path: Path) -> None:
    known = ("/usr/local/bin/hwcaps-fs", "/usr/local/lib/hwcaps-fs/bin/hwcaps-fs",
             "/usr/bin/hwcaps-fs")
    if any(os.path.exists(path) for path in known):
        pytest.skip("hwcaps-fs is installed here: the helper would find and run it")
    helper = configured_helper(tmp_path / "sbin", tmp_path / "missing")
    result = run_helper(helper, "/srv/store", "/srv/view")
    assert result.returncode == 32
    assert result.stderr == ("mount.hwcaps-fs: hwcaps-fs is not installed (looked for: "
                             f"{tmp_path}/missing/hwcaps-fs {' '.join(known)})\n")


@pytest.mark.parametrize(("status", "mount8_status"),
                         [(0, 0), (2, 1), (3, 32), (4, 32), (70, 32), (1, 32)])
def test_helper_gives_mount8_its_own_exit_codes(tmp_path: Path, status: int,
                                                mount8_status: int) -> None:
    """mount(8) passes a helper's status on, and reads hwcaps-fs's own codes as something
    else (2 "system error", 4 "internal mount bug"): usage is 1, every failure 32."""
    program = tmp_path / "hwcaps-fs"
    program.write_text(f"#!/bin/sh\necho 'hwcaps-fs: a failure' >&2\nexit {status}\n")
    program.chmod(0o755)
    result = run_helper(configured_helper(tmp_path / "sbin", tmp_path), "/srv/store", "/srv/v")
    assert result.returncode == mount8_status
    assert result.stderr == "hwcaps-fs: a failure\n"


# -- real mounts through mount(8) --------------------------------------------------------------


def mountinfo_fstype(path: Path) -> str | None:
    """The type of the topmost mount at ``path``, or None."""
    fstype = None
    with open("/proc/self/mountinfo", encoding="utf-8") as file:
        for line in file:
            fields = line.split()
            if fields[4] == str(path):
                fstype = fields[fields.index("-") + 1]
    return fstype


def daemon_pids(mountpoint: Path) -> list[int]:
    """The processes whose command line names ``mountpoint`` (the detached daemon)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if os.fsencode(mountpoint) in argv:
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def helpers_in_sbin(tmp_path: Path, fuse_ok: None) -> Iterator[None]:
    """Both helpers in /sbin for the test, configured to run this checkout's hwcaps-fs;
    removed afterwards. An installed helper is never replaced."""
    for name in HELPERS:
        if os.path.lexists(SBIN / name):
            pytest.skip(f"{SBIN / name} is installed here: not replacing it for a test")
    if shutil.which("mount") is None:
        pytest.skip("mount(8) is not installed (util-linux)")
    program = tmp_path / "bin/hwcaps-fs"
    program.parent.mkdir()
    program.write_text(f'#!/bin/sh\nexec {sys.executable} -m hwcaps_fs "$@"\n')
    program.chmod(0o755)
    staged = configured_helper(tmp_path / "sbin", program.parent)
    try:
        for name in HELPERS:
            shutil.copy(staged.parent / name, SBIN / name, follow_symlinks=False)
        yield
    finally:
        for name in HELPERS:
            (SBIN / name).unlink(missing_ok=True)


@pytest.fixture
def probe_store(tmp_path: Path, binaries: Path) -> Path:
    """bin/probe at the baseline and every x86-64 level, each printing its level."""
    return variant_store(binaries, tmp_path / "store", "bin/probe")


def level_in_effect() -> str:
    result = subprocess.run([sys.executable, "-m", "hwcaps_fs", "levels", "--json"],
                            capture_output=True, text=True, timeout=60, check=True)
    level: str = json.loads(result.stdout)["level"]
    return level


@pytest.mark.mount
@pytest.mark.parametrize("fstype", ["hwcaps-fs", "fuse.hwcaps-fs"])
def test_mount8_returns_once_mounted_and_umount_stops_the_daemon(
        helpers_in_sbin: None, probe_store: Path, tmp_path: Path, fstype: str) -> None:
    mountpoint = tmp_path / "view"
    mountpoint.mkdir()
    try:
        # As systemd runs it: no PATH, options as a .mount unit or fstab would give them.
        result = subprocess.run(
            ["/usr/bin/mount", "-t", fstype, "-o", "ro,allow_other,nofail,x-systemd.after=x",
             str(probe_store), str(mountpoint)], capture_output=True, text=True, timeout=60,
            env={})
        assert result.returncode == 0, result.stderr
        # The contract: mounted by the time mount(8) returns, not a moment later.
        assert mountinfo_fstype(mountpoint) == "fuse.hwcaps-fs"
        served = subprocess.run([str(mountpoint / "bin/probe")], capture_output=True,
                                text=True, timeout=30)
        assert served.stdout.strip() == level_in_effect()
        pids = daemon_pids(mountpoint)
        assert pids, "no daemon left running behind the helper"

        assert subprocess.run(["/usr/bin/umount", str(mountpoint)], timeout=30).returncode == 0
        assert mountinfo_fstype(mountpoint) is None
        deadline = time.monotonic() + 10
        while daemon_pids(mountpoint) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not daemon_pids(mountpoint), "the daemon outlived its mount"
    finally:
        if mountinfo_fstype(mountpoint) is not None:
            subprocess.run(["/usr/bin/umount", "-l", str(mountpoint)], check=False)
        for pid in daemon_pids(mountpoint):
            os.kill(pid, 9)


@pytest.mark.mount
def test_mount8_failure_is_one_line_and_nothing_is_left(helpers_in_sbin: None,
                                                        tmp_path: Path) -> None:
    mountpoint = tmp_path / "view"
    mountpoint.mkdir()
    result = subprocess.run(["/usr/bin/mount", "-t", "hwcaps-fs", str(tmp_path / "no-store"),
                             str(mountpoint)], capture_output=True, text=True, timeout=60,
                            env={})
    assert result.returncode == 32  # mount(8)'s "mount failure"
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no-store" in result.stderr
    assert mountinfo_fstype(mountpoint) is None
    assert not daemon_pids(mountpoint)
