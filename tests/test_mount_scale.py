"""Any store size within a fixed descriptor budget: a store of 100,000 names mounts, serves
and updates; with ``ulimit -n 64`` every name still runs, none fails with EMFILE; and the
names that ever existed cost nothing once gone."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from hwcaps_fs.fuse.backing import DESCRIPTOR_BUDGET, OTHER_DESCRIPTORS
from tests.builders import compile_level, install
from tests.mounting import DEADLINE, cleanup, daemon_pids, hwcaps_fs, mounted, wait_until

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("fuse_ok")]

#: Hard links made to one file (ext4 allows 65,000).
LINKS_PER_FILE = 50_000


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def store_of(binaries: Path, root: Path, names: int, *, link: bool = False) -> Path:
    """``names`` baseline programs (printing ``baseline``) in ``root/bin``; hard links of one
    file with ``link`` (a large store in little space and time), else copies."""
    program = compile_level(binaries, "baseline")
    first = root / "bin" / "name000000"
    for i in range(names):
        target = root / "bin" / f"name{i:06d}"
        if link and i % LINKS_PER_FILE:
            os.link(first, target)
        else:
            first = install(program, target)
    return root


def run_all(paths: list[Path]) -> list[str]:
    """Exec every path (one shell, so that the test's own descriptors do not matter); the
    lines of output, failures included."""
    script = 'for p in "$@"; do "$p" || echo "failed: $p"; done'
    result = subprocess.run(["sh", "-c", script, "sh", *map(str, paths)], capture_output=True,
                            text=True, timeout=DEADLINE * 8, check=False)
    return result.stdout.splitlines() + result.stderr.splitlines()


def test_ulimit_64_serves_every_name_with_no_emfile(binaries: Path, public: Path) -> None:
    store = store_of(binaries, public / "store", 100)
    mnt = public / "mnt"
    mnt.mkdir()
    limit = ("prlimit", "--nofile=64:64", "--")
    with mounted(store, mnt, prefix=limit) as mount:
        names = sorted((mnt / "bin").iterdir())
        assert len(names) == 100
        assert run_all(names) == ["baseline"] * 100
        program = compile_level(binaries, "baseline")
        for i in range(100, 140):
            install(program, store / "bin" / f"name{i:06d}")
        wait_until(lambda: len(os.listdir(mnt / "bin")) == 140, DEADLINE, "the new names")
        assert run_all(sorted((mnt / "bin").iterdir())) == ["baseline"] * 140
        assert open_fds(mount.process.pid) <= 64
        assert "Too many open files" not in mount.log_text()


@pytest.mark.slow
def test_a_store_of_100000_names_mounts_serves_and_updates(binaries: Path,
                                                           public: Path) -> None:
    store = store_of(binaries, public / "store", 100_000, link=True)
    (store / "glibc-hwcaps/x86-64-v2/bin").mkdir(parents=True)
    mnt = public / "mnt"
    mnt.mkdir()
    try:
        began = time.monotonic()
        result = hwcaps_fs("mount", "--root", str(store), str(mnt), timeout=120)
        ready = time.monotonic() - began
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        [pid] = daemon_pids(mnt)
        budget = DESCRIPTOR_BUDGET + OTHER_DESCRIPTORS
        assert open_fds(pid) <= budget
        # More distinct names than the budget holds: the oldest descriptors are closed.
        sample = [mnt / "bin" / f"name{i:06d}" for i in range(0, 100_000, 80)]
        assert run_all(sample) == ["baseline"] * len(sample)
        assert open_fds(pid) <= budget
        v3 = compile_level(binaries, "x86-64-v2", mark="mneeded")
        install(v3, store / "glibc-hwcaps/x86-64-v2/bin/name000007")
        wait_until(lambda: run_all([mnt / "bin/name000007"]) == ["x86-64-v2"], DEADLINE,
                   "the update (of one name: it costs that name, not the store)")
        print(f"mount-ready at 100,000 names: {ready:.1f} s (under the test machine's load)")
    finally:
        cleanup(mnt)


def test_warnings_are_remembered_only_while_their_name_exists(binaries: Path,
                                                             public: Path) -> None:
    """A skipped candidate is logged once while it stays, and again when it comes back after
    it was gone: the daemon forgets names that leave (its memory follows the store, not its
    history)."""
    store = store_of(binaries, public / "store", 1)
    mnt = public / "mnt"
    mnt.mkdir()
    odd = store / "glibc-hwcaps/x86-64-v2/bin/odd"
    program = compile_level(binaries, "x86-64-v2")
    with mounted(store, mnt) as mount:

        def logged() -> int:
            return mount.log_text().count("odd: skipped: not executable")

        def come_and_go(times: int) -> None:
            install(program, odd, mode=0o644)
            wait_until(lambda: logged() == times, DEADLINE, "the warning")
            os.utime(odd)  # another change to the same name: no new warning
            marker = install(program, store / "bin" / f"marker{times}")
            wait_until((mnt / "bin" / marker.name).exists, DEADLINE, "the update")
            odd.unlink()
            marker.unlink()
            wait_until(lambda: not (mnt / "bin" / marker.name).exists(), DEADLINE,
                       "the removal")

        come_and_go(1)
        come_and_go(2)
        assert logged() == 2, mount.log_text()


@pytest.mark.usefixtures("both_exec_paths")
@pytest.mark.parametrize("view", ["bin", ".hwcaps/baseline/bin"])
def test_a_name_closed_for_the_budget_then_replaced_fails_no_exec(binaries: Path,
                                                                  public: Path,
                                                                  view: str) -> None:
    """A name the kernel knows whose backing file was closed to stay within the budget, then
    renamed over in the store and executed while the daemon is still gathering the changes of
    a burst, runs the old file or the new one, never fails: the daemon drops the kernel's
    entry of such a name as soon as it notices the change (with the fast path nothing else
    would reach it before the first READ, which would find the file gone). The same for the
    name under ``-o levels_view``."""
    store = store_of(binaries, public / "store", 40)
    (store / "glibc-hwcaps/x86-64-v9").mkdir(parents=True)
    mnt = public / "mnt"
    mnt.mkdir()
    new = compile_level(binaries, "baseline", text="new")
    limit = ("prlimit", "--nofile=64:64", "--")  # a budget of 32 backing files
    with mounted(store, mnt, "-o", "levels_view", prefix=limit):
        names = [mnt / view / f"name{i:06d}" for i in range(40)]
        for path in names:
            path.stat()  # looked up, so opened: the first ones are closed again
        replaced = store / "bin" / names[0].name
        install(new, replaced.with_name(".new")).rename(replaced)
        start = time.monotonic()
        while time.monotonic() - start < 0.25:  # a burst (gathered for 0.5 s at most)
            (store / "glibc-hwcaps/x86-64-v9/busy").write_bytes(b"")
            time.sleep(0.01)
        result = subprocess.run([names[0]], capture_output=True, text=True, timeout=DEADLINE,
                                check=False)
        assert (result.returncode, result.stderr) == (0, ""), result
        assert result.stdout.strip() in ("baseline", "new")
        wait_until(lambda: run_all(names[:1]) == ["new"], DEADLINE, "the new file")
