"""Debian 12 root filesystems for guests (the boot test, the package test, the container test):
built once by mmdebstrap and cached as tarballs, hwcaps-fs's .deb installed into them with apt,
commands run in them with systemd-nspawn.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sh(*argv: str | Path) -> None:
    """Run a host command, failing loudly (these are set-up steps, not checks)."""
    subprocess.run([str(arg) for arg in argv], check=True)


def rootfs_tarball(work: Path, packages: Sequence[str], variant: str = "apt") -> Path:
    """The mmdebstrap tarball of SUITE's ``variant`` with ``packages``, built once and kept in
    WORK/cache."""
    key = hashlib.sha256(repr((SUITE, MIRROR, variant, *packages)).encode()).hexdigest()[:12]
    tarball = work / "cache" / f"rootfs-{SUITE}-{key}.tar"
    if not tarball.exists():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        log(f"building the {SUITE} rootfs (about a minute; cached as {tarball})")
        partial = tarball.with_suffix(".partial.tar")
        include = [f"--include={','.join(packages)}"] if packages else []
        sh("mmdebstrap", "--quiet", f"--variant={variant}", *include, SUITE, partial, MIRROR)
        partial.rename(tarball)
    return tarball


@contextlib.contextmanager
def nspawn_leftovers() -> Iterator[None]:
    """systemd-nspawn leaves /run/systemd/nspawn behind on a host whose /run is not a tmpfs
    (docs/boot.md); remove it if it was not there before."""
    state = Path("/run/systemd/nspawn")
    existed = state.exists()
    try:
        yield
    finally:
        if not existed:
            shutil.rmtree(state, ignore_errors=True)


def nspawn_run(rootfs: Path, *argv: str, binds: Sequence[str] = (),
               env: Sequence[str] = ()) -> list[str]:
    """The systemd-nspawn command that runs ``argv`` in ``rootfs`` (no boot), with ``binds``
    (``HOST:GUEST``) and ``env`` (``NAME=VALUE``); the host's network."""
    return ["systemd-nspawn", "--quiet", f"--directory={rootfs}", "--register=no",
            "--keep-unit", *(f"--bind={bind}" for bind in binds),
            *(f"--setenv={pair}" for pair in env), "--", *argv]


def apt_install_deb(rootfs: Path, deb: Path, cache: Path) -> None:
    """``apt-get install /path/to/hwcaps-fs_*.deb`` in ``rootfs``, as an administrator does:
    apt takes the dependencies from Debian's archive. Package lists and downloaded packages
    are kept in ``cache`` for the next run."""
    log(f"apt-get install {deb.name} in {rootfs}")
    archives, lists = cache / "apt-archives", cache / "apt-lists"
    for directory in (archives / "partial", lists / "partial"):
        directory.mkdir(parents=True, exist_ok=True)
    binds = (f"{archives}:/var/cache/apt/archives", f"{lists}:/var/lib/apt/lists",
             f"{deb.parent.resolve()}:/mnt/hwcaps-deb")
    script = f"apt-get update -qq && apt-get install -y -qq /mnt/hwcaps-deb/{deb.name} >/dev/null"
    with nspawn_leftovers():
        sh(*nspawn_run(rootfs, "sh", "-c", script, binds=binds,
                       env=("DEBIAN_FRONTEND=noninteractive",)))
