"""Runs inside the booted guest (hwcaps-boot-check.service): records what the boot did, crashes
the /usr/bin daemon, and writes everything to RESULT as JSON. The host (run.py) judges it.

It only gathers facts, so that one script serves the normal boot and the ``hwcaps_fs=off``
boot alike. It runs on a copy of the Python interpreter outside /usr/bin (see run.py): a
program whose executable is served by the mount may fault on pages it never read once the
daemon is killed, and the crash test kills it on purpose. For the same reason the wait for
auto_unmount uses nothing but Python itself; programs in /usr/bin are run again only once
the mount is gone or back.

Standard library only: it runs before (and regardless of) anything hwcaps-fs installs.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

RESULT = Path("/var/log/hwcaps-boot/result.json")
LOADER = "/lib64/ld-linux-x86-64.so.2"
#: Each program through which a deployment is observed: in place over /usr/bin, the
#: dedicated store behind a /usr/bin symlink, and the Type=notify service.
PROBES = ("/usr/bin/hwcaps-probe", "/usr/bin/hwcaps-store-probe",
          "/opt/svcstore/bin/hwcaps-probe")
MOUNTPOINTS = ("/usr/bin", "/opt/hwcaps", "/opt/svcstore")
UNITS = ("usr-bin.mount", "opt-hwcaps.mount", "hwcaps-fs@opt-svcstore.service",
         "local-fs.target")
UNIT_PROPERTIES = ("ActiveState", "SubState", "Result", "ConditionResult",
                   "ActiveEnterTimestampMonotonic", "StatusText")
#: A user whom /etc/sudoers.d lets run anything without a password (run.py creates it).
SUDO_USER = "hwcaps-sudo"
SUDO = Path("/usr/bin/sudo")
EXEC_PATH = "user.hwcaps.exec-path"
#: The service's private bind mount (an in-place view) and the unit systemd makes of it.
SERVICE_BIND = "/run/hwcaps-fs/opt-svcstore"
SERVICE_BIND_UNIT = "run-hwcaps\\x2dfs-opt\\x2dsvcstore.mount"
#: How long auto_unmount may take to remove the mount after the daemon is killed.
UNMOUNT_TIMEOUT = 30.0


def run(*argv: str, user: str | None = None) -> dict[str, object]:
    """``argv``'s exit status and output; run as ``user`` (uid, gid, no other groups) if
    given."""
    entry = pwd.getpwnam(user) if user is not None else None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                              user=entry.pw_uid if entry else None,
                              group=entry.pw_gid if entry else None,
                              extra_groups=[] if entry else None)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"rc": None, "stdout": "", "stderr": repr(error)}
    return {"rc": done.returncode, "stdout": done.stdout.strip(), "stderr": done.stderr.strip()}


def mount_types() -> dict[str, str | None]:
    """The type of the topmost mount at each of MOUNTPOINTS (None: not a mountpoint)."""
    found: dict[str, str | None] = dict.fromkeys(MOUNTPOINTS)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] in found:
            found[fields[4]] = fields[fields.index("-") + 1]
    return found


def exec_paths() -> dict[str, str | None]:
    """How each view serves an exec, as it says in its ``user.hwcaps.exec-path`` attribute
    (None where it says nothing)."""
    found: dict[str, str | None] = {}
    for mountpoint in MOUNTPOINTS:
        try:
            found[mountpoint] = os.getxattr(mountpoint, EXEC_PATH).decode()
        except OSError:
            found[mountpoint] = None
    return found


def unit_states() -> dict[str, dict[str, str]]:
    states = {}
    for unit in UNITS:
        shown = run("systemctl", "show", f"--property={','.join(UNIT_PROPERTIES)}", unit)
        lines = str(shown["stdout"]).splitlines()
        states[unit] = dict(line.split("=", 1) for line in lines if "=" in line)
    return states


def probes() -> dict[str, dict[str, object]]:
    return {probe: run(probe) for probe in PROBES}


def privileged() -> dict[str, object]:
    """sudo, setuid root, run by a user: through a view it must still run as root (the view
    serves it as a symlink into the plain directory, since a FUSE mount is nosuid)."""
    target = SUDO.stat()
    return {"symlink": SUDO.is_symlink(), "setuid_root": bool(target.st_mode & 0o4000)
            and target.st_uid == 0, "sudo": run(str(SUDO), "-n", "id", "-u", user=SUDO_USER)}


def usr_bin_daemon() -> int | None:
    """The hwcaps-fs daemon serving /usr/bin: its command line has the hwcaps-fs program,
    and /usr/bin as ROOT and MOUNTPOINT (fusermount3, its auto_unmount watcher, has not;
    the daemon's unmount guard has, but its name is ``hwcaps-fs-guard``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if (name != "hwcaps-fs-guard" and any(arg.endswith("/hwcaps-fs") for arg in argv)
                and argv.count("/usr/bin") == 2):
            return int(entry.name)
    return None


def processes() -> list[str]:
    """Every process, as ``pid ppid argv`` (read from /proc: no program from /usr/bin)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace")
                ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                continue
            found.append(f"{entry.name} {ppid} {argv.replace(chr(0), ' ').strip()}")
    return found


def crash_test() -> dict[str, object]:
    """kill -9 the /usr/bin daemon, wait for auto_unmount, look, then start the unit again."""
    pid = usr_bin_daemon()
    report: dict[str, object] = {"daemon_pid": pid, "processes_before": processes()}
    if pid is None:
        return report
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    while mount_types()["/usr/bin"] is not None and time.monotonic() - start < UNMOUNT_TIMEOUT:
        time.sleep(0.05)
    report["unmounted_after_s"] = round(time.monotonic() - start, 2)
    report["processes_after"] = processes()
    # systemd notices the vanished mount on its own schedule (mountinfo is polled).
    while (unit_states()["usr-bin.mount"].get("ActiveState") == "active"
           and time.monotonic() - start < UNMOUNT_TIMEOUT):
        time.sleep(0.1)
    report["after_kill"] = {"mounts": mount_types(), "probe": run(PROBES[0]),
                            "units": unit_states()}
    report["restart"] = run("systemctl", "start", "usr-bin.mount")
    report["after_restart"] = {"mounts": mount_types(), "probe": run(PROBES[0]),
                               "units": unit_states()}
    return report


def main_pid(unit: str) -> int:
    shown = run("systemctl", "show", "--property=MainPID", "--value", unit)
    return int(str(shown["stdout"]) or 0)


def service_crash_test() -> dict[str, object]:
    """kill -9 the Type=notify service's daemon: systemd must start it again on its own
    (Restart=on-failure), and the view must serve again."""
    unit, probe = UNITS[2], PROBES[2]
    pid = main_pid(unit)
    report: dict[str, object] = {"daemon_pid": pid}
    if not pid:
        return report
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    while time.monotonic() - start < UNMOUNT_TIMEOUT:
        again = main_pid(unit)
        if again not in (0, pid) and unit_states()[unit].get("ActiveState") == "active":
            break
        time.sleep(0.1)
    report.update(restarted_after_s=round(time.monotonic() - start, 2), new_pid=main_pid(unit),
                  units=unit_states(), mounts=mount_types(), probe=run(probe))
    return report


def mounts_under(path: str) -> list[str]:
    """The mountpoints at or below ``path``."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        where = line.split()[4]
        if where == path or where.startswith(path + "/"):
            found.append(where)
    return found


def service_stop_test() -> dict[str, object]:
    """Stop the service the way shutdown does: systemd stops the unit it made of the bind
    mount (nothing orders it after an instance of the template) while the daemon still
    serves, then the service. Nothing may be left under /run/hwcaps-fs; then start it again."""
    unit, probe = UNITS[2], PROBES[2]
    report: dict[str, object] = {
        "bind_before": mounts_under(SERVICE_BIND),
        "stop_bind": run("systemctl", "stop", SERVICE_BIND_UNIT),
        "stop": run("systemctl", "stop", unit),
    }
    report.update(bind_after=mounts_under(SERVICE_BIND),
                  directory_left=os.path.lexists(SERVICE_BIND),
                  units_stopped=unit_states(), start=run("systemctl", "start", unit))
    report.update(units=unit_states(), mounts=mount_types(), probe=run(probe))
    return report


def main() -> None:
    cmdline = Path("/proc/cmdline").read_text().split()
    result: dict[str, object] = {
        "virt": run("systemd-detect-virt")["stdout"],
        "pid1_cmdline": Path("/proc/1/cmdline").read_bytes().decode().split("\0"),
        "kernel_cmdline": cmdline,
        "ld_so_help": run(LOADER, "--help")["stdout"],
        "mounts": mount_types(),
        "exec_paths": exec_paths(),
        "units": unit_states(),
        "probes": probes(),
        "privileged": privileged(),
    }
    # The crash test needs a daemon: after hwcaps_fs=off there is none to kill.
    if mount_types()["/usr/bin"] is not None:
        result["crash"] = crash_test()
        result["service_crash"] = service_crash_test()
        result["service_stop"] = service_stop_test()
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1))
    os.sync()


if __name__ == "__main__":
    main()
