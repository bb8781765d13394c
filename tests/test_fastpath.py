"""The fast path (docs/fast-path.md), through real mounts: requests per exec and per listing
counted in libfuse's ``-o debug`` trace, the exec path the daemon reports, the fallback when the
library is not in place, and the daemon on Debian's own python3-pyfuse3 and python3-trio."""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from hwcaps_fs.fuse import fastpath
from tests.builders import compile_level, install, variant_store
from tests.mounting import DEADLINE, Mount, mounted, suite_options, wait_until

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("fuse_ok")]

#: Execs counted per measurement.
EXECS = 50

#: Debian's interpreter, which finds Debian's python3-pyfuse3 and python3-trio.
SYSTEM_PYTHON = "/usr/bin/python3"


def run(program: Path) -> str:
    result = subprocess.run([program], capture_output=True, text=True, timeout=DEADLINE,
                            check=True)
    return result.stdout.strip()


#: Requests that come from the kernel reclaiming memory, not from what the test does: inodes
#: it forgets, pages it dropped and reads again (this VM reclaims unused page cache within
#: seconds, and other tests share it).
RECLAIM = frozenset({"FORGET", "BATCH_FORGET", "READ"})


def requests_during(mount: Mount, action: Callable[[], object]) -> Counter[str]:
    """The requests the daemon received while ``action`` ran (libfuse's debug trace), less
    those of :data:`RECLAIM` (a READ per exec would still fail the test: at most a few are
    allowed); the asynchronous ones (RELEASE after an exec) are waited for."""
    start = len(mount.log_text())
    action()
    time.sleep(0.3)
    requests = Counter(re.findall(r"opcode: (\w+)", mount.log_text()[start:]))
    assert requests["READ"] <= EXECS // 10, requests
    return Counter({name: count for name, count in requests.items() if name not in RECLAIM})


def execs(program: Path, expected: str) -> Callable[[], None]:
    def run_all() -> None:
        for _ in range(EXECS):
            assert run(program) == expected
    return run_all


def exec_path(mount: Mount) -> str:
    return os.getxattr(mount.path, "user.hwcaps.exec-path").decode()


@pytest.fixture
def store(binaries: Path, tmp_path: Path) -> Path:
    """A variant store with a dynamic bin/foo and a static bin/static, 3,000 names in all."""
    root = variant_store(binaries, tmp_path / "store", "bin/foo")
    install(compile_level(binaries, "baseline", text="static", static=True),
            root / "bin/static")
    for index in range(2998):
        (root / "bin" / f"data{index:04}").write_bytes(b"x")
    (tmp_path / "mnt").mkdir()
    return root


@pytest.fixture
def on_fast_path() -> None:
    if fastpath.library_path() is None:
        pytest.skip("the fast-path library is not built (no compiler or libfuse3 headers)")
    if "fastpath=off" in " ".join(suite_options()):
        pytest.skip("the suite runs with the fast path off ($HWCAPS_FS_TEST_OPTIONS)")


def test_the_library_is_built_and_links_no_libfuse() -> None:
    """Where libfuse3's headers are, the package's build made the library; it must not link
    a libfuse of its own (two in one process would mix their sessions)."""
    headers = shutil.which("pkg-config") is not None and subprocess.run(
        ["pkg-config", "--exists", "fuse3"], check=False).returncode == 0
    path = fastpath.library_path()
    if path is None:
        assert not headers, "libfuse3's headers are installed but the library was not built"
        pytest.skip("no libfuse3 headers: the package was built without the fast path")
    assert b"libfuse3.so" not in Path(path).read_bytes()


@pytest.mark.usefixtures("on_fast_path")
@pytest.mark.parametrize("presentation", ["files", "symlinks"])
def test_zero_requests_per_exec(store: Path, tmp_path: Path, level: str,
                                presentation: str) -> None:
    """In steady state an exec through the view never reaches the daemon: not the dynamic
    program, not the static one, not a script, in either presentation."""
    script = store / "bin/script"
    script.write_text("#!/bin/sh\necho script\n")
    script.chmod(0o755)
    with mounted(store, tmp_path / "mnt", "-o", f"debug,presentation={presentation}") as mount:
        mnt = mount.path
        expected = "zero-request (cached symlinks)" if presentation == "symlinks" else \
            "zero-request (no-open)"
        assert exec_path(mount) == expected
        assert f"exec path: {expected}" in mount.log_text()
        assert mount.notified.endswith(f", exec path: {expected}")
        programs = [(mnt / "bin/foo", level), (mnt / "bin/static", "static"),
                    (mnt / "bin/script", "script")]
        for program, output in programs:
            assert run(program) == output
        for program, output in programs:
            assert requests_during(mount, execs(program, output)) == {}, program


@pytest.mark.parametrize("presentation", ["files", "symlinks"])
def test_stock_path_one_request_per_exec(store: Path, tmp_path: Path, level: str,
                                         presentation: str) -> None:
    """With ``-o fastpath=off`` an exec costs what stock pyfuse3 makes it: OPEN (and RELEASE
    behind it), or one READLINK; never a LOOKUP, GETATTR, GETXATTR or FLUSH."""
    with mounted(store, tmp_path / "mnt",
                 "-o", f"debug,fastpath=off,presentation={presentation}") as mount:
        foo = mount.path / "bin/foo"
        assert run(foo) == level
        assert exec_path(mount) == "one request per exec (fast path off: -o fastpath=off)"
        expected = ({"READLINK": EXECS} if presentation == "symlinks"
                    else {"OPEN": EXECS, "RELEASE": EXECS})
        assert requests_during(mount, execs(foo, level)) == expected


@pytest.mark.usefixtures("on_fast_path")
def test_listings_cost_no_request_per_entry(store: Path, tmp_path: Path) -> None:
    """``ls -l`` asks two attributes per entry that the view never has: declined with
    EOPNOTSUPP, ls stops asking for the rest of the mount; the listing itself is cached by
    the kernel (an OPENDIR and a RELEASEDIR, no READDIRPLUS), and a change to the directory
    shows at once."""
    with mounted(store, tmp_path / "mnt", "-o", "debug") as mount:
        bin_dir = mount.path / "bin"

        def ls(*flags: str) -> list[str]:
            result = subprocess.run(["ls", *flags, str(bin_dir)], capture_output=True,
                                    text=True, timeout=DEADLINE, check=True)
            return result.stdout.splitlines()

        assert len(ls("-l")) == 3001
        listing = {"OPENDIR": 1, "RELEASEDIR": 1}
        assert requests_during(mount, lambda: ls("-l")) == {**listing, "GETXATTR": 2}
        assert requests_during(mount, ls) == listing
        assert os.getxattr(bin_dir / "foo", "user.hwcaps.source")

        (store / "bin/data0000").unlink()
        wait_until(lambda: "data0000" not in ls(), DEADLINE, "the removal in the listing")
        assert len(ls()) == 2999


@pytest.mark.usefixtures("both_exec_paths")
def test_cold_caches_mmap_and_scripts(binaries: Path, store: Path, tmp_path: Path,
                                      level: str) -> None:
    """After the page cache is dropped every name runs its own bytes again (the READs reach
    the daemon with the inode), and a large file reads and maps (shared and private) as its
    backing file does."""
    install(compile_level(binaries, "baseline", text="other"), store / "bin/other")
    (store / "bin/script").write_text("#!/bin/sh\necho script\n")
    (store / "bin/script").chmod(0o755)
    big = store / "bin/big"
    big.write_bytes(os.urandom(20 << 20))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    with mounted(store, tmp_path / "mnt") as mount:
        programs = {"foo": level, "static": "static", "other": "other", "script": "script"}
        for name, output in programs.items():
            assert run(mount.path / "bin" / name) == output
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        for name, output in programs.items():
            assert run(mount.path / "bin" / name) == output
        view = mount.path / "bin/big"
        assert hashlib.sha256(view.read_bytes()).hexdigest() == digest
        with view.open("rb") as file:
            for flags in (mmap.MAP_SHARED, mmap.MAP_PRIVATE):
                with mmap.mmap(file.fileno(), 0, flags=flags, prot=mmap.PROT_READ) as mapped:
                    assert hashlib.sha256(mapped).hexdigest() == digest


@pytest.mark.usefixtures("on_fast_path")
def test_fallback_when_loaded_after_pyfuse3(store: Path, tmp_path: Path, level: str) -> None:
    """A daemon in which pyfuse3 was imported first cannot take the fast path: it serves as
    before, one request per exec, and says so once."""
    late = (sys.executable, "-c", "import sys, pyfuse3, runpy; sys.argv[0] = 'hwcaps-fs'; "
            "runpy.run_module('hwcaps_fs', run_name='__main__')")
    with mounted(store, tmp_path / "mnt", "-o", "debug", command_line=late) as mount:
        foo = mount.path / "bin/foo"
        assert run(foo) == level
        reason = "one request per exec (fast path not loaded: loaded after pyfuse3"
        assert exec_path(mount).startswith(reason)
        assert len(re.findall(r"WARNING: serving .*, exec path: one request per exec",
                              mount.log_text())) == 1
        assert requests_during(mount, execs(foo, level)) == {"OPEN": EXECS, "RELEASE": EXECS}


def _system_stack() -> str | None:
    """Why Debian's own pyfuse3 and trio cannot run the daemon here, or None."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} is not installed"
    probe = subprocess.run([SYSTEM_PYTHON, "-I", "-c", "import pyfuse3, trio"],
                           capture_output=True, text=True, timeout=DEADLINE, check=False)
    if probe.returncode:
        return "python3-pyfuse3 and python3-trio are not installed"
    if fastpath.library_path() is None:
        return "the fast-path library is not built"
    return None


@pytest.mark.usefixtures("on_fast_path")
def test_on_debians_pyfuse3_and_trio(binaries: Path, store: Path, tmp_path: Path,
                                     level: str) -> None:
    """The daemon run by /usr/bin/python3 with python3-pyfuse3 and python3-trio (archspec,
    which bookworm does not package, from this checkout's environment): zero requests per
    exec, live updates included."""
    reason = _system_stack()
    if reason:
        pytest.skip(reason)
    import archspec

    only_archspec = tmp_path / "archspec-only"
    only_archspec.mkdir()
    (only_archspec / "archspec").symlink_to(Path(archspec.__file__).parent)
    checkout = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": f"{checkout}:{only_archspec}"}
    with mounted(store, tmp_path / "mnt", "-o", "debug", env=env,
                 command_line=(SYSTEM_PYTHON, "-m", "hwcaps_fs")) as mount:
        foo = mount.path / "bin/foo"
        assert run(foo) == level
        assert exec_path(mount) == "zero-request (no-open)"
        assert requests_during(mount, execs(foo, level)) == {}
        served = store / "bin/foo" if level == "x86-64" else \
            store / "glibc-hwcaps" / level / "bin/foo"
        updated = compile_level(binaries, level, text="updated")
        install(updated, served.with_name(".foo.new")).rename(served)
        wait_until(lambda: run(foo) == "updated", DEADLINE, "the updated variant")
