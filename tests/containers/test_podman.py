"""``hwcaps-fs run`` as a container's entrypoint under a real engine, podman (``make
container-test``; slow, so ``make test`` skips it).

The image has no registry behind it: a Debian 12 root filesystem (mmdebstrap, cached under
/var/tmp), hwcaps-fs installed from dist/'s .deb with apt, a variant store of ``hwcaps-probe``
(a program that prints the level it was built for) in /opt/app, all of it ``podman import``-ed
with the entrypoint ``hwcaps-fs run --root /opt/app --mountpoint /opt/app-view --``. Then:

* with ``--device /dev/fuse --cap-add SYS_ADMIN`` the view is a FUSE mount and the best build
  runs; CMD's exit status and a SIGTERM sent to the container reach CMD;
* without them hwcaps-fs says so in one line on stderr and serves a symlink view instead;
* rootless podman, if it can run here;
* every run leaves nothing behind: no container, no hwcaps-fs process, no mount on the host.

podman runs with ``--runtime runc --cgroup-manager=cgroupfs`` (no systemd on the host) and with
lower rlimits than its defaults (this machine lacks CAP_SYS_RESOURCE to raise them).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.boot.rootfs import apt_install_deb, rootfs_tarball, sh
from tests.builders import variant_store

if not os.environ.get("HWCAPS_FS_CONTAINER_TEST"):
    pytest.skip("slow: make container-test runs it", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("HWCAPS_FS_CONTAINER_WORK", "/var/tmp/hwcaps-fs-container-test"))
STORE, VIEW = "/opt/app", "/opt/app-view"
PATH = f"{VIEW}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENTRYPOINT = ["/usr/bin/hwcaps-fs", "run", "--root", STORE, "--mountpoint", VIEW, "--"]
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager=cgroupfs")
#: podman's default rlimits are higher than a process without CAP_SYS_RESOURCE may set.
LIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
#: What every container gets: those limits, and no network (none is needed, and rootless
#: podman's slirp4netns needs /dev/net/tun).
RUN_OPTIONS = (*LIMITS, "--network", "none")
FUSE = ("--device", "/dev/fuse", "--cap-add", "SYS_ADMIN")
LABEL = "hwcaps-fs-test"
ROOTLESS_USER = "hwcaps-podman"
#: The CMD that shows what a container got: the probe's output, then the view's file system.
SHOW = ("sh", "-c", f"hwcaps-probe && findmnt -n -o FSTYPE {VIEW} || echo none")


@dataclass(frozen=True)
class Engine:
    """podman as some user: the command prefix, and the image imported for that user."""

    prefix: tuple[str, ...]
    image: str


def podman(engine: Engine, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*engine.prefix, *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def deb() -> Path:
    given = os.environ.get("HWCAPS_FS_DEB")
    debs = [Path(given)] if given else sorted((REPO / "dist").glob("hwcaps-fs_*.deb"),
                                               key=lambda path: path.stat().st_mtime)
    if not debs:
        pytest.skip("no dist/hwcaps-fs_*.deb: make container-test builds it")
    return debs[-1]


def skip_unless_podman_runs(prefix: Sequence[str], who: str) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (make container-test installs it)")
    probe = subprocess.run([*prefix, "info"], capture_output=True, text=True, timeout=120,
                           check=False)
    if probe.returncode:
        lines = probe.stderr.strip().splitlines() or ["?"]
        pytest.skip(f"podman cannot run {who}: {lines[-1]}")


@pytest.fixture(scope="session")
def base_tarball() -> Path:
    """Debian 12 minbase (mmdebstrap, cached): what the images start from."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mmdebstrap, apt in the rootfs)")
    skip_unless_podman_runs(PODMAN, "as root")
    return rootfs_tarball(WORK, (), variant="minbase")


@pytest.fixture(scope="session")
def image_tarball(binaries: Path, base_tarball: Path) -> Iterator[Path]:
    """The image's root filesystem as a tarball: minbase Debian 12, the .deb, the store."""
    package = deb()
    build = Path(tempfile.mkdtemp(prefix="image-", dir=WORK))
    try:
        rootfs = build / "rootfs"
        rootfs.mkdir()
        sh("tar", "-xf", base_tarball, "-C", rootfs)
        apt_install_deb(rootfs, package, WORK / "cache")
        variant_store(binaries, rootfs / STORE.lstrip("/"), "bin/hwcaps-probe")
        (rootfs / VIEW.lstrip("/")).mkdir()
        tarball = build / "image.tar"
        sh("tar", "-C", rootfs, "-cf", tarball, ".")
        shutil.rmtree(rootfs)
        yield tarball
    finally:
        shutil.rmtree(build, ignore_errors=True)


def import_image(prefix: Sequence[str], tarball: Path, *changes: str) -> str:
    """``tarball`` as an image (``podman import``) with the Containerfile ``changes``."""
    name = f"localhost/hwcaps-fs-test:{uuid.uuid4().hex[:8]}"
    sh(*prefix, "import", "--quiet", *(f"--change={change}" for change in changes), tarball,
       name)
    return name


def app_image(prefix: Sequence[str], tarball: Path) -> str:
    entrypoint = ", ".join(f'"{arg}"' for arg in ENTRYPOINT)
    return import_image(prefix, tarball, f"ENTRYPOINT [{entrypoint}]", 'CMD ["hwcaps-probe"]',
                        f"ENV PATH={PATH}")


@pytest.fixture(scope="session")
def rootful(image_tarball: Path) -> Iterator[Engine]:
    name = app_image(PODMAN, image_tarball)
    try:
        yield Engine(PODMAN, name)
    finally:
        subprocess.run([*PODMAN, "rmi", "--force", name], capture_output=True, check=False)


def containers_processes() -> list[str]:
    """Processes on the host that serve this image's view (its entrypoint, the keeper and the
    daemon all carry the view's path in their command line): none once the container ended."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if b"/usr/bin/hwcaps-fs" in argv[:2] and VIEW.encode() in argv:
                    found.append(f"{entry.name}: {b' '.join(argv).decode(errors='replace')}")
    return found


def containers_mounts() -> list[str]:
    """The view's mounts as the host sees them: none ever (they are the container's)."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if f" {VIEW} " in line]


@pytest.fixture
def leaves_nothing(rootful: Engine) -> Iterator[None]:
    """After the test: no container of ours, no process or mount of its view on the host."""
    yield
    left = podman(rootful, "ps", "--all", "--quiet", "--filter", f"label={LABEL}").stdout
    assert not left.strip(), f"containers left: {left}"
    assert not containers_processes()
    assert not containers_mounts()


def run(engine: Engine, *command: str, options: Sequence[str] = ()) -> (
        subprocess.CompletedProcess[str]):
    """``podman run --rm`` of the image with ``options``, CMD ``command`` (default: the
    image's)."""
    return podman(engine, "run", "--rm", "--label", LABEL, *RUN_OPTIONS, *options, engine.image,
                  *command)


def test_with_fuse_the_best_build_runs_from_a_fuse_view(rootful: Engine, level: str,
                                                        leaves_nothing: None) -> None:
    done = run(rootful, *SHOW, options=FUSE)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{level}\nfuse.hwcaps-fs\n", "")


def test_the_image_cmd_runs_by_default(rootful: Engine, level: str,
                                       leaves_nothing: None) -> None:
    done = run(rootful, options=FUSE)
    assert (done.returncode, done.stdout) == (0, f"{level}\n"), done.stderr


def test_exit_status_passes_through(rootful: Engine, leaves_nothing: None) -> None:
    assert run(rootful, "sh", "-c", "exit 7", options=FUSE).returncode == 7


def test_sigterm_reaches_the_command(rootful: Engine, leaves_nothing: None) -> None:
    """``podman stop`` sends SIGTERM to the container's PID 1: CMD itself, since hwcaps-fs run
    exec'd it. CMD exits 42 on it; had the signal not reached it, podman would have killed it
    (137) after the timeout."""
    name = f"hwcaps-fs-test-{uuid.uuid4().hex[:8]}"
    script = 'trap "echo terminated; exit 42" TERM; echo ready; while :; do sleep 0.1; done'
    started = podman(rootful, "run", "--detach", "--name", name, "--label", LABEL, *RUN_OPTIONS,
                     *FUSE, rootful.image, "sh", "-c", script)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 30
        while "ready" not in podman(rootful, "logs", name).stdout:
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.1)
        stopped = podman(rootful, "stop", "--time", "20", name)
        assert stopped.returncode == 0, stopped.stderr
        status = podman(rootful, "inspect", "--format", "{{.State.ExitCode}}", name).stdout
        assert status.strip() == "42"
        assert podman(rootful, "logs", name).stdout.split() == ["ready", "terminated"]
    finally:
        podman(rootful, "rm", "--force", name)


def test_without_fuse_a_symlink_view_and_one_line_on_stderr(rootful: Engine, level: str,
                                                            leaves_nothing: None) -> None:
    done = run(rootful, *SHOW)
    show = run(rootful, "sh", "-c", f"hwcaps-probe && readlink {VIEW}/bin/hwcaps-probe")
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "FUSE unavailable" in lines[0], done.stderr
    assert show.returncode == 0
    probe, target = show.stdout.splitlines()
    assert probe == level
    assert target.startswith(STORE) and target.endswith("/bin/hwcaps-probe")
    if level != "baseline":
        assert f"/glibc-hwcaps/{level}/" in target


def test_the_containerfile_builds_and_runs(rootful: Engine, base_tarball: Path, level: str,
                                           leaves_nothing: None) -> None:
    """tests/containers/Containerfile, built by ``podman build`` as a user would, with the
    minbase rootfs as its BASE (there is no registry here; its RUN steps fetch packages from
    Debian's archive): the best build runs, through FUSE or the symlink fallback."""
    if not sorted((REPO / "dist").glob("hwcaps-fs_*.deb")):
        pytest.skip("no dist/hwcaps-fs_*.deb for the Containerfile: make deb")
    base = import_image(PODMAN, base_tarball)
    built = Engine(PODMAN, f"localhost/hwcaps-fs-test:{uuid.uuid4().hex[:8]}")
    try:
        build = subprocess.run(
            [*PODMAN, "build", "--quiet", "--layers=false", "--network=host", *LIMITS,
             f"--build-arg=BASE={base}", f"--tag={built.image}",
             f"--file={REPO / 'tests/containers/Containerfile'}", str(REPO)],
            capture_output=True, text=True, timeout=1200, check=False)
        assert build.returncode == 0, build.stderr[-2000:]
        for options in (FUSE, ()):
            done = run(built, "hwcaps-demo", "1000", options=options)
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines()[0] == level
    finally:
        podman(rootful, "rmi", "--force", built.image, base)


@pytest.fixture(scope="session")
def rootless(image_tarball: Path) -> Iterator[Engine]:
    """podman run by an ordinary user, with subordinate ids, its own storage and runtime
    directory; skipped with podman's reason if that cannot run here."""
    if shutil.which("newuidmap") is None:
        pytest.skip("rootless podman needs newuidmap (package uidmap)")
    sh("useradd", "--create-home", ROOTLESS_USER)  # with subordinate ids (login.defs)
    user = pwd.getpwnam(ROOTLESS_USER)
    runtime = Path(tempfile.mkdtemp(prefix="hwcaps-podman-run-"))
    os.chown(runtime, user.pw_uid, user.pw_gid)
    prefix = ("setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
              "env", f"HOME={user.pw_dir}", f"XDG_RUNTIME_DIR={runtime}", *PODMAN)
    try:
        skip_unless_podman_runs(prefix, f"rootless (as {ROOTLESS_USER})")
        tarball = Path(user.pw_dir) / "image.tar"
        shutil.copy(image_tarball, tarball)
        yield Engine(prefix, app_image(prefix, tarball))
    finally:
        # podman's storage (files owned by subordinate ids), then what podman left running
        # as the user (its pause process), then the user.
        subprocess.run([*prefix, "system", "reset", "--force"], capture_output=True,
                       check=False)
        for pid in processes_of(user.pw_uid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["userdel", "--remove", ROOTLESS_USER], capture_output=True,
                       check=False)
        shutil.rmtree(runtime, ignore_errors=True)


def processes_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                found.append(int(entry.name))
    return found


def test_rootless_runs_the_best_build(rootless: Engine, level: str) -> None:
    """Rootless, ``--device /dev/fuse`` is a bind mount of the host's node: the view is a FUSE
    mount if that node is open to the user, else the symlink view with its one line."""
    done = run(rootless, *SHOW, options=("--device", "/dev/fuse"))
    probe, fstype = done.stdout.splitlines()
    assert (done.returncode, probe) == (0, level), done.stderr
    if fstype == "fuse.hwcaps-fs":
        assert done.stderr == ""
    else:
        assert len(done.stderr.splitlines()) == 1 and "FUSE unavailable" in done.stderr
