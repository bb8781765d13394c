"""Bad input against a real mount: refused with one line and a documented exit code before
anything is mounted, or, once mounted, skipped with a warning while every good name goes on
being served. Also what other users of an allow_other mount may reach."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from hwcaps_fs.core.levels import X86_64
from tests import elf_images as img
from tests.builders import compile_level, install, variant_store
from tests.mounting import (
    DEADLINE,
    assert_one_line_error,
    daemon_pids,
    hwcaps_fs,
    is_fuse_mounted,
    mounted,
    wait_until,
)

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("fuse_ok")]

#: A name 255 bytes long, the most a directory entry holds.
LONG_NAME = "n" * 255

#: A name that is not UTF-8.
LATIN1_NAME = b"caf\xe9"


@pytest.fixture
def area(public: Path) -> Path:
    """A directory every user can traverse, with an empty ``mnt`` in it."""
    (public / "mnt").mkdir()
    return public


def run(path: Path, user: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", user, "--"] if user else []
    return subprocess.run([*prefix, str(path)], capture_output=True, text=True,
                          timeout=DEADLINE, check=False)


def output(path: Path) -> str:
    result = run(path)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# -- refused before mounting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing root", 3),
        ("root is a file", 3),
        ("missing mountpoint", 3),
        ("mountpoint is a file", 3),
        ("mountpoint inside root", 3),
        ("unknown option", 2),
        ("bad option value", 2),
        ("unknown level", 2),
        ("unknown level option", 2),
        ("malformed config", 2),
    ],
)
def test_refused_before_mounting(binaries: Path, area: Path, case: str, code: int) -> None:
    store = variant_store(binaries, area / "store", "bin/foo")
    (area / "file").write_text("")
    (area / "config.toml").write_text("level = [unterminated\n")
    mnt = str(area / "mnt")
    args = {
        "missing root": ["--root", str(area / "none"), mnt],
        "root is a file": ["--root", str(area / "file"), mnt],
        "missing mountpoint": ["--root", str(store), str(area / "none")],
        "mountpoint is a file": ["--root", str(store), str(area / "file")],
        "mountpoint inside root": ["--root", str(store), str(store / "bin")],
        "unknown option": ["--root", str(store), "-o", "frobnicate", mnt],
        "bad option value": ["--root", str(store), "-o", "presentation=maybe", mnt],
        "unknown level": ["--root", str(store), "--level", "x86-64-v9", mnt],
        "unknown level option": ["--root", str(store), "-o", "level=x86-64-v9", mnt],
        "malformed config": ["--root", str(store), "--config", str(area / "config.toml"), mnt],
    }[case]
    assert_one_line_error(hwcaps_fs("mount", *args), code)
    assert not is_fuse_mounted(area / "mnt") and not daemon_pids(area / "mnt")


def test_busy_mountpoint_stays_mounted_and_serving(binaries: Path, area: Path,
                                                  level: str) -> None:
    store = variant_store(binaries, area / "store", "bin/foo")
    mnt = area / "mnt"
    with mounted(store, mnt):
        holder = subprocess.Popen(["sleep", "60"], cwd=mnt / "bin")
        try:
            busy = hwcaps_fs("umount", str(mnt))
            assert_one_line_error(busy, 4)
            assert "umount -l" in busy.stderr
            assert output(mnt / "bin/foo") == level
        finally:
            holder.kill()
            holder.wait(DEADLINE)


# -- a hostile store, mounted --------------------------------------------------------------


def hostile_store(binaries: Path, root: Path, level: str) -> dict[str, str | None]:
    """A store full of what must not be served, next to good names. Returns what each name
    must print when run through the mount (None: the name is absent from the view)."""
    variant_store(binaries, root, "bin/ok")
    expected: dict[str, str | None] = {"bin/ok": level}
    baseline = compile_level(binaries, "baseline", mark="mneeded")
    v2 = compile_level(binaries, "x86-64-v2", mark="mneeded")
    v4 = compile_level(binaries, "x86-64-v4", mark="mneeded")
    bin_dir, v2_dir = root / "bin", root / "glibc-hwcaps/x86-64-v2/bin"

    os.mkfifo(bin_dir / "fifo")
    os.mknod(bin_dir / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(bin_dir / "sock"))
    expected.update({"bin/fifo": None, "bin/null": None, "bin/sock": None})

    for name in ("escape", "arm", "truncated", "misplaced", "fifo-variant"):
        install(baseline, bin_dir / name)
        expected[f"bin/{name}"] = "baseline"
    os.symlink("/bin/sh", v2_dir / "escape")
    (v2_dir / "arm").write_bytes(img.marked(None, img.AARCH64))
    (v2_dir / "truncated").write_bytes(img.marked(0x1)[:40])
    os.mkfifo(v2_dir / "fifo-variant")
    for name in ("arm", "truncated"):
        (v2_dir / name).chmod(0o755)
    install(v4, v2_dir / "misplaced")
    if level == "x86-64-v4":
        expected["bin/misplaced"] = "x86-64-v4"

    for name in (LONG_NAME, os.fsdecode(LATIN1_NAME)):
        install(baseline, bin_dir / name)
        install(v2, v2_dir / name)
        expected[f"bin/{name}"] = "baseline" if level == "x86-64" else "x86-64-v2"

    deep = root / "/".join(["d"] * 40)
    install(baseline, deep / "too-deep")
    install(baseline, root / "/".join(["d"] * 10) / "deep-enough")
    expected["/".join(["d"] * 10) + "/deep-enough"] = "baseline"
    expected["/".join(["d"] * 40) + "/too-deep"] = None

    (root / "glibc-hwcaps/x86-64-v9").mkdir()
    return expected


def test_a_hostile_store_serves_only_what_it_should(binaries: Path, area: Path,
                                                  level: str) -> None:
    store = area / "store"
    expected = hostile_store(binaries, store, level)
    mnt = area / "mnt"
    with mounted(store, mnt) as mount:
        for name, prints in expected.items():
            path = mnt / name
            if prints is None:
                assert not os.path.lexists(path), name
            else:
                assert output(path) == prints, name
        log = mount.log_text()
        assert mount.process.poll() is None
    assert "Traceback" not in log
    for fragment in ("bin/fifo: skipped", "x86-64-v9", "more than 32 directories deep",
                     "bin/escape: skipped", "bin/arm: skipped", "bin/truncated: skipped"):
        assert fragment in log, fragment


def test_an_empty_store_mounts_and_fills(binaries: Path, area: Path, level: str) -> None:
    store = area / "store"
    store.mkdir()
    mnt = area / "mnt"
    with mounted(store, mnt):
        assert os.listdir(mnt) == []
        assert os.statvfs(mnt).f_namemax == 255
        variant_store(binaries, store, "bin/foo")
        wait_until(lambda: (mnt / "bin/foo").exists(), DEADLINE, "the first name")
        wait_until(lambda: output(mnt / "bin/foo") == level, DEADLINE, "its best variant")


def test_root_removed_while_mounted(binaries: Path, area: Path, level: str) -> None:
    store = variant_store(binaries, area / "store", "bin/foo")
    mnt = area / "mnt"
    with mounted(store, mnt) as mount:
        assert output(mnt / "bin/foo") == level
        shutil.rmtree(store)
        wait_until(lambda: os.listdir(mnt) == [], DEADLINE, "the view to empty")
        wait_until(lambda: "was removed" in mount.log_text(), DEADLINE, "the warning")
        assert mount.process.poll() is None
        assert os.statvfs(mnt).f_namemax == 255
        assert mount.stop() == 0
    assert "Traceback" not in mount.log_text()


def test_an_unreadable_variant_directory_is_skipped(binaries: Path, area: Path,
                                                    level: str) -> None:
    """Root reads any directory, so the daemon runs without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH here, like a daemon confined by its unit would."""
    if level == "x86-64":
        pytest.skip("this CPU serves no variant level to make unreadable")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    store = variant_store(binaries, area / "store", "bin/foo")
    (store / "glibc-hwcaps" / level).chmod(0)
    below = X86_64.level_names[X86_64.level_names.index(level) - 1] if level != "x86-64-v2" \
        else "baseline"
    drop = ("setpriv", "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search")
    with mounted(store, area / "mnt", prefix=drop) as mount:
        assert output(area / "mnt/bin/foo") == below
        assert f"glibc-hwcaps/{level}" in mount.log_text()


# -- other users of an allow_other mount ---------------------------------------------------


def test_other_users_reach_nothing_the_store_hides(binaries: Path, area: Path,
                                                   level: str) -> None:
    store = variant_store(binaries, area / "store", "bin/foo")
    install(compile_level(binaries, "baseline"), store / "bin/secret", mode=0o700)
    install(compile_level(binaries, "baseline"), store / "private/tool")
    (store / "private").chmod(0o700)
    served_from = store / "glibc-hwcaps" / level if level != "x86-64" else store
    served_from.chmod(0o700)
    mnt = area / "mnt"
    with mounted(store, mnt):
        for name, source in (("bin/foo", served_from / "bin/foo"),
                             ("bin/secret", store / "bin/secret"),
                             ("private/tool", store / "private/tool")):
            real = run(source, user="nobody")
            viewed = run(mnt / name, user="nobody")
            assert real.returncode != 0 and viewed.returncode != 0, name
            assert "Permission denied" in viewed.stderr, (name, viewed.stderr)
            assert run(mnt / name).returncode == 0, name
        listing = subprocess.run(["runuser", "-u", "nobody", "--", "ls", str(mnt / "private")],
                                 capture_output=True, text=True, timeout=DEADLINE, check=False)
        assert listing.returncode != 0 and "Permission denied" in listing.stderr

