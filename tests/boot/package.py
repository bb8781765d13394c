"""What ``apt-get install ./dist/hwcaps-fs_*.deb`` put into a Debian 12 root filesystem
(``make deb-test``): checked on the unpacked rootfs before any unit is enabled, and by running
the installed command in it, on Debian's own python3, python3-pyfuse3 and python3-trio, with no
archspec (Debian 12 has none). Whether the installed package mounts and serves is what the
boots that follow check.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.boot.rootfs import nspawn_leftovers, nspawn_run

PACKAGE = "hwcaps-fs"
COMMAND = "/usr/bin/hwcaps-fs"
UNITS = ("usr-bin.mount", "opt-hwcaps.mount", "hwcaps-fs@.service")
#: Where each file must be for the tool that looks for it: mount(8) searches /sbin for
#: mount.<type>, dh_installsystemd's units go to bookworm's /lib/systemd/system.
FILES = (
    COMMAND,
    "/sbin/mount.hwcaps-fs",
    "/sbin/mount.fuse.hwcaps-fs",
    *(f"/lib/systemd/system/{unit}" for unit in UNITS),
    "/usr/share/doc/hwcaps-fs/copyright",
    "/usr/share/man/man1/hwcaps-fs.1.gz",
    "/usr/share/man/man8/mount.hwcaps-fs.8.gz",
    "/usr/share/man/man8/mount.fuse.hwcaps-fs.8.gz",
    "/usr/share/bash-completion/completions/hwcaps-fs",
)

#: C sources built into the package by setup.py (each must be in the package, compiled: the
#: extension is optional to setuptools, so a failed compilation does not fail the build).
REPO = Path(__file__).resolve().parents[2]
SITE = "usr/lib/python3/dist-packages"

Check = Callable[[str, bool, str], None]


def in_guest(rootfs: Path, *argv: str) -> tuple[int, str, str]:
    """``argv`` run in ``rootfs`` (systemd-nspawn, no boot): exit status, stdout, stderr. The
    command's stderr goes through a file, apart from what nspawn itself says."""
    errors = rootfs / "var/tmp/hwcaps-stderr"
    wrapped = ("sh", "-c", f'exec "$@" 2>/{errors.relative_to(rootfs)}', "sh", *argv)
    with nspawn_leftovers():
        done = subprocess.run(nspawn_run(rootfs, *wrapped), capture_output=True, text=True,
                              timeout=120, check=False)
    stderr = errors.read_text() if errors.exists() else ""
    errors.unlink(missing_ok=True)
    return done.returncode, done.stdout, stderr


def check_package(rootfs: Path, check: Check) -> None:
    state = subprocess.run(
        ["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "--show",
         "--showformat=${Status} ${Version}", PACKAGE],
        capture_output=True, text=True, check=False).stdout
    check("apt installed the package and its dependencies",
          state.startswith("install ok installed"), state)
    for path in FILES:
        check(f"installs {path}", (rootfs / path.lstrip("/")).exists(), "")
    for source in sorted(REPO.glob("hwcaps_fs/**/*.c")):
        module = source.relative_to(REPO).with_suffix("")
        built = sorted((rootfs / SITE / module.parent).glob(f"{module.name}.*.so"))
        check(f"installs {module} compiled", bool(built), " ".join(path.name for path in built))
    command = rootfs / COMMAND.lstrip("/")
    shebang = command.read_text().splitlines()[0] if command.exists() else ""
    check(f"{COMMAND} runs python3 -P (its directory, maybe a view, is not on sys.path)",
          shebang.replace("#! ", "#!") == "#!/usr/bin/python3 -P", shebang)
    helper = rootfs / "sbin/mount.hwcaps-fs"
    check(f"the mount helper runs {COMMAND}",
          helper.exists() and f"CONFIGURED='{COMMAND}'" in helper.read_text(), "")
    template = rootfs / "lib/systemd/system/hwcaps-fs@.service"
    check(f"hwcaps-fs@.service runs {COMMAND}",
          template.exists() and f"ExecStart={COMMAND} " in template.read_text(), "")
    enabled = [str(link.relative_to(rootfs))
               for link in (rootfs / "etc/systemd/system").rglob("*") if link.name in UNITS]
    check("no unit is enabled by the installation", not enabled, " ".join(enabled))
    status, _, _ = in_guest(rootfs, "python3", "-c", "import archspec")
    check("archspec is absent (Debian 12 has none)", status != 0, "")
    status, out, err = in_guest(rootfs, COMMAND, "levels")
    check("hwcaps-fs levels: exit 0, nothing on stderr", status == 0 and not err,
          f"rc {status}: {(err or out).strip().splitlines()[0] if (err or out).strip() else ''}")
    status, _, err = in_guest(rootfs, "/sbin/mount.hwcaps-fs", "/opt/hwcaps", "/opt/hwcaps", "-f")
    check("mount.hwcaps-fs -f (mount(8)'s --fake) finds the command", status == 0,
          f"rc {status}: {err.strip()}")
