"""The mount table, as /proc/self/mountinfo lists it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo (the fields hwcaps-fs needs)."""

    mount_id: int
    mountpoint: str
    fstype: str
    source: str

    @property
    def is_fuse(self) -> bool:
        return self.fstype == "fuse" or self.fstype.startswith("fuse.")


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
        entries.append(MountEntry(int(fields[0]), _unescape(fields[4]),
                                  fields[separator + 1], _unescape(fields[separator + 2])))
    return entries


def mounts_at(path: str) -> list[MountEntry]:
    """The mounts whose mountpoint is exactly ``path`` (absolute, not resolved), bottom first."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as file:
        return [entry for entry in parse_mountinfo(file.read()) if entry.mountpoint == path]
