"""The boot test (``make boot-test``): hwcaps-fs started by a real systemd at boot.

A Debian 12 root filesystem (mmdebstrap, cached under WORK/cache) gets hwcaps-fs the way a
user installs it: ``make install DESTDIR=<rootfs>``, or with ``--deb`` (``make deb-test``)
``apt-get install`` of the Debian package, whose installed files are checked first
(tests/boot/package.py). Then three deployments are enabled with
``systemctl --root=<rootfs> enable``: in place over /usr/bin (usr-bin.mount), a dedicated store
behind a /usr/bin symlink (opt-hwcaps.mount), and the Type=notify template
(hwcaps-fs@opt-svcstore.service). Each deployment serves ``hwcaps-probe``, a program built for
every x86-64 level that prints its level. A oneshot service (guest_check.py) records what the
guest sees (sudo run by a user among it: setuid programs must keep working through a view),
kills the /usr/bin daemon with SIGKILL, restarts the unit, kills the service's daemon (systemd
restarts it), stops the service after its bind mount's unit as shutdown may (nothing may be
left under /run/hwcaps-fs), starts it again, and powers off.

Boots:

* systemd-nspawn, twice: a normal boot, then one with ``hwcaps_fs=off`` (which systemd in a
  container reads from PID 1's arguments) that must leave every directory plain;
* QEMU with software emulation (TCG: KVM is unusable here, docs/boot.md), once per CPU
  model: qemu64 (baseline), Nehalem (x86-64-v2), Haswell (x86-64-v3), max. This one has a
  real kernel, module loading, a real root file system and a real power-off.

In every normal boot the probes must print what the guest's own ``ld.so --help`` says is the
highest level, the units must be up before local-fs.target, the killed daemon's mount must be
gone with /usr/bin plain again, the restarted unit must serve again, and the journal must show
a clean unmount at shutdown, with no complaint from a daemon about its bind mount. Results
are printed as a table; the exit status is 1 if any check failed.

Run as root: ``make boot-test`` (or ``.venv/bin/python -m tests.boot.run --help``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hwcaps_fs.detect.loader import parse_help
from tests.boot.package import check_package
from tests.boot.rootfs import (
    apt_install_deb,
    log,
    nspawn_leftovers,
    rootfs_tarball,
    sh,
)
from tests.builders import compile_level, install

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
#: What every guest needs: systemd, and sudo (a privileged program that must keep working while
#: its directory is a view).
BASE_PACKAGES = ("systemd-sysv", "kmod", "procps", "sudo")
#: QEMU's guests also boot a kernel with its initramfs, and udev.
KERNEL_PACKAGES = ("udev", "linux-image-cloud-amd64", "initramfs-tools")
#: What ``make install`` needs on the target: fusermount3 (auto_unmount) and the Python that
#: hwcaps-fs runs on. The .deb brings its own dependencies, through apt.
MAKE_INSTALL_PACKAGES = ("fuse3", "python3")
#: QEMU CPU model -> the level its guest must reach (None: whatever TCG offers, recorded).
CPU_MODELS: dict[str, str | None] = {
    "qemu64": "baseline",
    "Nehalem": "x86-64-v2",
    "Haswell": "x86-64-v3",
    "max": None,
}
VARIANT_LEVELS = ("x86-64-v2", "x86-64-v3", "x86-64-v4")
#: The Type=notify service among the deployments.
SERVICE = "hwcaps-fs@opt-svcstore.service"
DEPLOYMENTS = ("usr-bin.mount", "opt-hwcaps.mount", SERVICE)
CHECK_UNIT = "hwcaps-boot-check.service"
CHECK_DIR = "usr/local/libexec/hwcaps-boot"
RESULT = "var/log/hwcaps-boot/result.json"
JOURNAL = "var/log/journal"
NSPAWN_TIMEOUT = 180
QEMU_TIMEOUT = 420
QEMU_APPEND = ("console=ttyS0 root=/dev/vda rw printk.devkmsg=on systemd.show_status=1 "
               "panic=-1")
IMAGE_SIZE = "3G"
SUDO_USER = "hwcaps-sudo"
#: The fast-path library's source: where it exists, every view must say it serves execs with
#: no request (the library was built and installed, and it works).
FAST_PATH_SOURCE = REPO / "hwcaps_fs/fuse/_fastpath.c"


# -- the root file system -------------------------------------------------------------------


def install_store(root: Path, binaries: Path, baseline: str, variant_dir: str) -> None:
    """hwcaps-probe in the glibc layout: ``root/baseline`` and ``root/glibc-hwcaps/<level>/
    variant_dir/hwcaps-probe``."""
    install(compile_level(binaries, "baseline", mark="mneeded"), root / baseline)
    for level in VARIANT_LEVELS:
        install(compile_level(binaries, level, mark="mneeded"),
                root / "glibc-hwcaps" / level / variant_dir / "hwcaps-probe")


def make_install(rootfs: Path) -> None:
    log("make install DESTDIR=<rootfs>")
    sh("make", "-s", "-C", REPO, "install", f"DESTDIR={rootfs}")


def prepare_rootfs(tarball: Path, rootfs: Path, binaries: Path,
                   install_hwcaps_fs: Callable[[Path], None]) -> None:
    log(f"unpacking into {rootfs}")
    rootfs.mkdir(parents=True)
    sh("tar", "-xf", tarball, "-C", rootfs)
    install_hwcaps_fs(rootfs)
    # In place over /usr/bin: the variants live in /usr/bin/glibc-hwcaps/.
    install_store(rootfs / "usr/bin", binaries, "hwcaps-probe", "")
    # The dedicated store, reached through a /usr/bin symlink; and one for the service.
    for store in ("opt/hwcaps", "opt/svcstore"):
        install_store(rootfs / store, binaries, "bin/hwcaps-probe", "bin")
    (rootfs / "usr/bin/hwcaps-store-probe").symlink_to("/opt/hwcaps/bin/hwcaps-probe")
    # The probe runs on its own copy of the interpreter, outside /usr/bin (guest_check.py).
    check_dir = rootfs / CHECK_DIR
    check_dir.mkdir(parents=True)
    shutil.copy2(rootfs / "usr/bin/python3.11", check_dir / "python3")
    shutil.copy2(HERE / "guest_check.py", check_dir / "guest_check.py")
    shutil.copy2(HERE / CHECK_UNIT, rootfs / "etc/systemd/system" / CHECK_UNIT)
    sh("systemctl", f"--root={rootfs}", "--quiet", "enable", *DEPLOYMENTS, CHECK_UNIT)
    (rootfs / JOURNAL).mkdir(parents=True, exist_ok=True)  # persistent: read after power-off
    (rootfs / "etc/hostname").write_text("hwcaps-boot\n")
    with (rootfs / "etc/hosts").open("a") as hosts:
        hosts.write("127.0.1.1 hwcaps-boot\n")  # sudo looks its host up
    # A user whom sudo lets run anything: sudo, setuid root, must keep working through a view.
    sh("useradd", f"--root={rootfs}", "--create-home", SUDO_USER)
    sudoers = rootfs / "etc/sudoers.d" / SUDO_USER
    sudoers.write_text(f"{SUDO_USER} ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    # No getty on the console: nothing is typed there, and it keeps the log readable.
    sh("systemctl", f"--root={rootfs}", "--quiet", "mask", "serial-getty@ttyS0.service",
       "console-getty.service", "getty@tty1.service")


def reset_outputs(rootfs: Path) -> None:
    """Forget what the previous boot of this rootfs wrote."""
    shutil.rmtree(rootfs / RESULT.rsplit("/", 1)[0], ignore_errors=True)
    for entry in (rootfs / JOURNAL).iterdir():
        shutil.rmtree(entry)


# -- boots ------------------------------------------------------------------------------------


@dataclass
class Boot:
    """One boot and what came out of it."""

    name: str
    expected_level: str | None = None
    hwcaps_off: bool = False
    seconds: float = 0.0
    timed_out: bool = False
    result: dict[str, object] | None = None
    journal: str = ""
    console: Path | None = None
    checks: list[tuple[str, bool, str]] = field(default_factory=list)


def read_outputs(boot: Boot, result: Path, journal: Path) -> None:
    """Take the probe's JSON and the journal that the guest left in ``result``/``journal``."""
    if result.exists():
        boot.result = json.loads(result.read_text())
    if journal.is_dir():
        boot.journal = subprocess.run(
            ["journalctl", f"--directory={journal}", "--output=short-monotonic", "--no-pager"],
            capture_output=True, text=True, check=False).stdout


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc: no process-tree tool needed)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def run_guest(argv: Sequence[str], timeout: float, output: Path, boot: Boot) -> None:
    """Run a guest (nspawn or QEMU) to its power-off; past ``timeout``, kill it and everything
    it started (for nspawn that includes the container's init, whose death ends the
    container)."""
    start = time.monotonic()
    with output.open("w") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            boot.timed_out = True
            for pid in reversed(descendants(process.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            process.wait()
        finally:
            boot.seconds = time.monotonic() - start


def boot_nspawn(rootfs: Path, logs: Path, boot: Boot) -> Boot:
    reset_outputs(rootfs)
    # /dev/fuse from the host (no module loading in a container); no machined to register
    # with; kernel-command-line words after the options go to the container's systemd.
    argv = ["systemd-nspawn", "--quiet", f"--directory={rootfs}", "--boot", "--register=no",
            "--keep-unit", "--bind=/dev/fuse", "--console=pipe", "--machine=hwcaps-boot"]
    if boot.hwcaps_off:
        argv.append("hwcaps_fs=off")
    boot.console = logs / f"{boot.name}.log"
    log(f"{boot.name}: booting")
    with nspawn_leftovers():
        run_guest(argv, NSPAWN_TIMEOUT, boot.console, boot)
    # Kept with the logs: the next boot of this rootfs starts afresh.
    out = logs / boot.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for kept in (RESULT.rsplit("/", 1)[0], JOURNAL):
        if (rootfs / kept).is_dir():
            shutil.copytree(rootfs / kept, out / Path(kept).name)
    read_outputs(boot, out / "hwcaps-boot/result.json", out / "journal")
    return boot


def make_image(rootfs: Path, image: Path) -> None:
    reset_outputs(rootfs)
    log(f"making the disk image {image}")
    sh("mkfs.ext4", "-q", "-F", "-L", "hwcaps-boot", "-d", rootfs, image, IMAGE_SIZE)


def boot_qemu(rootfs: Path, image: Path, logs: Path, model: str, boot: Boot) -> Boot:
    disk = logs / f"{boot.name}.raw"
    sh("cp", "--sparse=always", image, disk)
    kernel = max(rootfs.glob("boot/vmlinuz-*"))
    initrd = max(rootfs.glob("boot/initrd.img-*"))
    boot.console = logs / f"{boot.name}.console"
    argv = ["qemu-system-x86_64", "-nodefaults", "-no-reboot", "-display", "none",
            "-accel", "tcg,thread=multi", "-cpu", model, "-smp", "1", "-m", "1024",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", QEMU_APPEND,
            "-drive", f"file={disk},format=raw,if=virtio",
            "-serial", f"file:{boot.console}"]
    log(f"{boot.name}: booting")
    run_guest(argv, QEMU_TIMEOUT, logs / f"{boot.name}.qemu.log", boot)
    # The guest's files, read from its ext4 image without mounting it.
    out = logs / boot.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    subprocess.run(["debugfs", "-R", f"rdump /{RESULT.rsplit('/', 1)[0]} /{JOURNAL} {out}",
                    str(disk)], capture_output=True, check=False)
    disk.unlink()
    read_outputs(boot, out / "hwcaps-boot/result.json", out / "journal")
    return boot


# -- judging ----------------------------------------------------------------------------------


def loader_level(help_text: str) -> str:
    """The highest level the guest's loader searches, as ``ld.so --help`` lists it."""
    report = parse_help(help_text)
    return report.active[0] if report is not None and report.active else "baseline"


def output_of(run: object) -> str:
    return str(run["stdout"]) if isinstance(run, dict) else repr(run)


def judge(boot: Boot) -> None:
    def check(name: str, ok: bool, detail: str = "") -> None:
        boot.checks.append((name, ok, detail))

    check("guest powered off by itself", not boot.timed_out, f"{boot.seconds:.0f} s")
    result = boot.result
    check("the check service ran and wrote its result", result is not None)
    if result is None:
        return
    level = loader_level(str(result["ld_so_help"]))
    if boot.expected_level is not None:
        check(f"ld.so in the guest finds {boot.expected_level}", level == boot.expected_level,
              f"ld.so: {level}")
    units: dict[str, dict[str, str]] = result["units"]  # type: ignore[assignment]
    mounts: dict[str, str | None] = result["mounts"]  # type: ignore[assignment]
    probes: dict[str, object] = result["probes"]  # type: ignore[assignment]
    judge_privileged(result.get("privileged"), served=not boot.hwcaps_off, check=check)
    if boot.hwcaps_off:
        for unit in DEPLOYMENTS:
            state = units[unit]
            check(f"{unit} skipped (hwcaps_fs=off)",
                  state.get("ConditionResult") == "no" and state.get("ActiveState") != "active",
                  f"{state}")
        for mountpoint, fstype in mounts.items():
            check(f"{mountpoint} left plain", fstype is None, f"{fstype}")
        for probe, run in probes.items():
            check(f"{probe} runs the baseline", output_of(run) == "baseline", output_of(run))
        return
    local_fs = int(units["local-fs.target"].get("ActiveEnterTimestampMonotonic", "0"))
    for unit in DEPLOYMENTS:
        state = units[unit]
        entered = int(state.get("ActiveEnterTimestampMonotonic", "0"))
        check(f"{unit} active", state.get("ActiveState") == "active", f"{state}")
        check(f"{unit} up before local-fs.target", 0 < entered <= local_fs,
              f"{entered} <= {local_fs} µs")
    for mountpoint, fstype in mounts.items():
        check(f"{mountpoint} mounted", fstype == "fuse.hwcaps-fs", f"{fstype}")
    for probe, run in probes.items():
        check(f"{probe} runs {level}", output_of(run) == level, output_of(run))
    status = units[SERVICE].get("StatusText", "")
    check(f"{SERVICE} tells systemd what it serves (STATUS=)",
          status.startswith(f"serving /opt/svcstore: level {level} (decided by "), status)
    if FAST_PATH_SOURCE.exists():
        exec_paths: dict[str, str | None] = result.get("exec_paths", {})  # type: ignore[assignment]
        for mountpoint, path in exec_paths.items():
            check(f"{mountpoint}: execs take the fast path", str(path).startswith("zero-request"),
                  f"{path}")
    judge_crash(result.get("crash"), level, check)
    judge_service_crash(result.get("service_crash"), level, check)
    judge_service_stop(result.get("service_stop"), level, check)
    judge_journal(boot.journal, check)


def judge_privileged(found: object, served: bool,
                     check: Callable[[str, bool, str], None]) -> None:
    if not isinstance(found, dict):
        check("privileged programs: sudo was looked at", False, f"{found}")
        return
    sudo = found["sudo"]
    check(f"sudo, run by {SUDO_USER}, runs a command as root",
          sudo["rc"] == 0 and sudo["stdout"] == "0", f"{sudo}")
    if served:
        check("/usr/bin/sudo is served as a symlink to the setuid-root file",
              found["symlink"] is True and found["setuid_root"] is True, f"{found}")


def judge_crash(crash: object, level: str, check: Callable[[str, bool, str], None]) -> None:
    if not isinstance(crash, dict) or crash.get("daemon_pid") is None:
        check("crash test: the /usr/bin daemon was found", False, f"{crash}")
        return
    after, again = crash["after_kill"], crash["after_restart"]
    check("crash test: kill -9 removes the /usr/bin mount (auto_unmount)",
          after["mounts"]["/usr/bin"] is None, f"after {crash['unmounted_after_s']} s")
    check("crash test: /usr/bin is the plain directory again",
          output_of(after["probe"]) == "baseline", output_of(after["probe"]))
    check("crash test: usr-bin.mount is no longer active",
          after["units"]["usr-bin.mount"].get("ActiveState") != "active",
          f"{after['units']['usr-bin.mount']}")
    check("crash test: systemctl start usr-bin.mount serves again",
          crash["restart"]["rc"] == 0 and output_of(again["probe"]) == level,
          f"rc {crash['restart']['rc']}, probe {output_of(again['probe'])}")


def judge_service_crash(crash: object, level: str,
                        check: Callable[[str, bool, str], None]) -> None:
    if not isinstance(crash, dict) or not crash.get("daemon_pid"):
        check("service crash test: the service's daemon was found", False, f"{crash}")
        return
    unit = SERVICE
    check("service crash test: systemd restarts the killed daemon (Restart=on-failure)",
          crash["new_pid"] not in (0, crash["daemon_pid"])
          and crash["units"][unit].get("ActiveState") == "active",
          f"pid {crash['daemon_pid']} -> {crash['new_pid']} after {crash['restarted_after_s']} s")
    check("service crash test: the restarted service serves again",
          crash["mounts"]["/opt/svcstore"] == "fuse.hwcaps-fs"
          and output_of(crash["probe"]) == level, output_of(crash["probe"]))


def judge_service_stop(stop: object, level: str,
                       check: Callable[[str, bool, str], None]) -> None:
    if not isinstance(stop, dict) or not stop.get("bind_before"):
        check("service stop test: the service's bind mount was found", False, f"{stop}")
        return
    check("service stop test: systemctl stop, after systemd unmounted the bind mount",
          stop["stop_bind"]["rc"] == 0 and stop["stop"]["rc"] == 0
          and stop["units_stopped"][SERVICE].get("ActiveState") == "inactive",
          f"{stop['stop_bind']}, {stop['stop']}, {stop['units_stopped'][SERVICE]}")
    check("service stop test: nothing left under /run/hwcaps-fs (no mount, no directory)",
          not stop["bind_after"] and not stop["directory_left"],
          f"mounts {stop['bind_after']}, directory left: {stop['directory_left']}")
    check("service stop test: systemctl start serves again",
          stop["start"]["rc"] == 0 and stop["units"][SERVICE].get("ActiveState") == "active"
          and stop["mounts"]["/opt/svcstore"] == "fuse.hwcaps-fs"
          and output_of(stop["probe"]) == level,
          f"rc {stop['start']['rc']}, probe {output_of(stop['probe'])}")


def judge_journal(journal: str, check: Callable[[str, bool, str], None]) -> None:
    lines = journal.splitlines()
    check("journal read", bool(lines), f"{len(lines)} lines")
    # "cannot remove the bind mount": the daemon found its bind mount unmounted by systemd.
    for bad in ("Failed unmounting", "Mount process finished, but there is no mount",
                "Traceback", "cannot remove the bind mount"):
        found = [line for line in lines if bad in line]
        check(f"journal: no '{bad}'", not found, found[0] if found else "")
    # Under the journal the daemon writes "<N>message": journald shows the message with its
    # priority and its own "hwcaps-fs[pid]:", once.
    doubled = [line for line in lines
               if re.search(r"hwcaps-fs\[\d+\]: (hwcaps-fs\[|<\d>)", line)]
    check("journal: hwcaps-fs lines have one prefix and their priority parsed", not doubled,
          doubled[0] if doubled else "")
    started = [line for line in lines
               if re.search(r"hwcaps-fs\[\d+\]: serving /opt/svcstore: ", line)]
    check("journal: the service says what it serves", bool(started), started[0] if started else "")
    # The check service powers off once done: every mount after that line is the shutdown's.
    done = max((i for i, line in enumerate(lines) if CHECK_UNIT in line), default=len(lines))
    for unit in DEPLOYMENTS:
        stopped = [line for line in lines[done:]
                   if f"{unit}: Deactivated successfully" in line]
        check(f"shutdown: {unit} stopped cleanly", bool(stopped), stopped[0] if stopped else "")


# -- main -------------------------------------------------------------------------------------


def print_report(boots: list[Boot]) -> bool:
    ok = True
    for boot in boots:
        failed = [check for check in boot.checks if not check[1]]
        ok = ok and not failed
        status = "ok" if not failed else f"FAILED ({len(failed)} of {len(boot.checks)})"
        print(f"\n== {boot.name}: {status}, {boot.seconds:.0f} s"
              f"{f'  (console: {boot.console})' if boot.console else ''}")
        for name, passed, detail in boot.checks:
            print(f"  {'ok  ' if passed else 'FAIL'} {name}{f'  [{detail}]' if detail else ''}")
    return ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.boot.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/hwcaps-fs-boot"),
                        help="cache and logs (default: %(default)s)")
    parser.add_argument("--only", choices=["nspawn", "qemu"], help="one kind of boot only")
    parser.add_argument("--cpu", action="append", choices=list(CPU_MODELS),
                        help="QEMU CPU model (repeatable; default: all)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)),
                        help="QEMU guests at once (default: one per host CPU)")
    parser.add_argument("--keep", action="store_true", help="keep the unpacked rootfs")
    parser.add_argument("--deb", type=Path,
                        help="install this Debian package with apt-get instead of running "
                             "`make install`, and check what it installed (make deb-test)")
    return parser.parse_args(argv)


#: The host tools every run needs: the rootfs, its units, the probes, the guests' journals.
TOOLS = ("mmdebstrap", "systemctl", "gcc", "journalctl")

#: And those of each kind of boot (``--only``).
BOOT_TOOLS = {"nspawn": ("systemd-nspawn",),
              "qemu": ("qemu-system-x86_64", "mkfs.ext4", "debugfs")}


def missing_tools(args: argparse.Namespace) -> list[str]:
    """The tools the boots ``args`` ask for need and PATH lacks: ``make install`` needs make;
    ``--deb`` runs apt-get in the rootfs with systemd-nspawn, whatever boots follow."""
    kinds = [args.only] if args.only else list(BOOT_TOOLS)
    tools = [*TOOLS, *(tool for kind in kinds for tool in BOOT_TOOLS[kind]),
             "make" if args.deb is None else "systemd-nspawn"]
    return [tool for tool in dict.fromkeys(tools) if shutil.which(tool) is None]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("boot-test: run as root (mmdebstrap, nspawn and FUSE need it)", file=sys.stderr)
        return 2
    if missing := missing_tools(args):
        print(f"boot-test: missing {' '.join(missing)} (make boot-deps installs them)",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    packages = [*BASE_PACKAGES, *(KERNEL_PACKAGES if args.only != "nspawn" else ())]
    boots: list[Boot] = []
    if args.deb is None:
        install_hwcaps_fs: Callable[[Path], None] = make_install
        packages.extend(MAKE_INSTALL_PACKAGES)
    else:
        installed = Boot(f"apt-get install {args.deb.name}")

        def install_hwcaps_fs(rootfs: Path) -> None:
            apt_install_deb(rootfs, args.deb, args.work / "cache")
            check_package(rootfs, lambda *found: installed.checks.append(found))

    tarball = rootfs_tarball(args.work, packages)
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=args.work))
    try:
        rootfs = run_dir / "rootfs"
        prepare_rootfs(tarball, rootfs, args.work / "binaries", install_hwcaps_fs)
        if args.only in (None, "nspawn"):
            boots.append(boot_nspawn(rootfs, logs, Boot("nspawn")))
            boots.append(boot_nspawn(rootfs, logs, Boot("nspawn-hwcaps_fs=off",
                                                        hwcaps_off=True)))
        if args.only in (None, "qemu"):
            image = run_dir / "image.raw"
            make_image(rootfs, image)
            models = args.cpu or list(CPU_MODELS)
            with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
                boots.extend(pool.map(
                    lambda model: boot_qemu(rootfs, image, logs, model,
                                            Boot(f"qemu-{model}", CPU_MODELS[model])),
                    models))
    finally:
        if args.keep:
            log(f"kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    for boot in boots:
        judge(boot)
    if args.deb is not None:
        boots.insert(0, installed)
    ok = print_report(boots)
    print(f"\nboot test {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s "
          f"(logs: {logs})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
