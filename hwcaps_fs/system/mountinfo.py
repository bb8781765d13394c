"""The mount table, as /proc/self/mountinfo lists it."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from hwcaps_fs.core.mount_options import DEFAULT_SUBTYPE
from hwcaps_fs.system.namespaces import MS_NODEV, MS_NOEXEC, MS_NOSUID

#: What a view's type is: ``fuse.<subtype>``, and the subtype is always ``hwcaps-fs`` or
#: begins with ``hwcaps-fs.`` (:mod:`hwcaps_fs.core.mount_options`).
VIEW_FSTYPE = f"fuse.{DEFAULT_SUBTYPE}"

#: The restrictions of a mount, as mountinfo's per-mount options say them, and the mount(2)
#: flag of each: what is mounted from a directory (its private bind, its view) must carry
#: every one of the directory's own mount (``ro`` is always set on both).
RESTRICTIONS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo (the fields hwcaps-fs needs)."""

    mount_id: int
    device: str  # major:minor, as /sys/class/bdi/ names it
    mountpoint: str
    fstype: str
    source: str
    options: frozenset[str] = frozenset()

    @property
    def is_view(self) -> bool:
        """Whether this is a hwcaps-fs view (whatever its ``subtype=``): never an sshfs or any
        other FUSE file system that happens to be mounted there."""
        return self.fstype == VIEW_FSTYPE or self.fstype.startswith(VIEW_FSTYPE + ".")


def _unescape(text: str) -> str:
    r"""mountinfo writes space, tab, newline and backslash as ``\ooo`` octal escapes."""
    parts = text.split("\\")
    out = [parts[0]]
    for part in parts[1:]:
        code = part[:3]
        out.append(chr(int(code, 8)) + part[3:] if len(code) == 3 and code.isdigit()
                   else "\\" + part)
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """The mounts listed in mountinfo ``text``, in order (a later mount is on top)."""
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        separator = fields.index("-")
        entries.append(MountEntry(int(fields[0]), fields[2], _unescape(fields[4]),
                                  fields[separator + 1], _unescape(fields[separator + 2]),
                                  frozenset(fields[5].split(","))))
    return entries


def _mount_table() -> list[MountEntry]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as file:
        return parse_mountinfo(file.read())


def mounts_at(path: str) -> list[MountEntry]:
    """The mounts whose mountpoint is exactly ``path`` (absolute, not resolved), bottom first."""
    return [entry for entry in _mount_table() if entry.mountpoint == path]


def view_containing(path: str) -> str | None:
    """The mountpoint of the hwcaps-fs view ``path`` (absolute, normalised) is in: the
    topmost mount at ``path`` or the nearest directory above it, if it is a view; else None."""
    table = _mount_table()
    while True:
        found = [entry for entry in table if entry.mountpoint == path]
        if found:
            return path if found[-1].is_view else None
        if path == "/":
            return None
        path = posixpath.dirname(path)


def restrictions(fd: int) -> int:
    """The mount(2) flags of the :data:`RESTRICTIONS` of the mount the file open as ``fd`` is
    on (found by its mount id: statvfs would ask the file system, and not every FUSE one
    answers)."""
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as file:
        fields = dict(line.split(":", 1) for line in file.read().splitlines() if ":" in line)
    mount_id = int(fields["mnt_id"])
    entry = next(entry for entry in _mount_table() if entry.mount_id == mount_id)
    return sum(flag for word, flag in RESTRICTIONS.items() if word in entry.options)
