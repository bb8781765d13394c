"""The errors a user can meet, each with the exit status the command line gives it.

Every error hwcaps-fs raises on bad input is a :class:`HwcapsFsError`: the command line prints
its message as one line on stderr and exits with its ``exit_code``; anything else is a bug.
The codes are documented in README.md ("Exit status").
"""

from __future__ import annotations


class HwcapsFsError(Exception):
    """Base class: a problem the user can act on, reported as one line."""

    exit_code = 1


class UsageError(HwcapsFsError):
    """A bad option, option value, level name or configuration file."""

    exit_code = 2


class PathError(HwcapsFsError):
    """ROOT or MOUNTPOINT is missing, not a directory, or unreadable."""

    exit_code = 3


class MountError(HwcapsFsError):
    """The mount could not be made or removed (busy mountpoint, no FUSE, ...)."""

    exit_code = 4


class CommandNotFoundError(HwcapsFsError):
    """``hwcaps-fs run`` could not find the command to execute."""

    exit_code = 127


def show(path: str) -> str:
    """``path`` printable as UTF-8 (undecodable bytes as ``\\xNN``), for messages."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
