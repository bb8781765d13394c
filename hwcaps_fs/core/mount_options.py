"""``-o`` mount options: what the user (or mount(8) through mount.fuse3) asked for.

Some options are ours, some are FUSE's, and many are the generic words mount(8) and
mount.fuse3 put on every command line (``rw``, ``dev``, ``suid``, ``defaults``, ``_netdev``,
``x-systemd.*``...). Those are accepted and ignored rather than refused, because a refusal
would make an fstab line that looks perfectly normal fail at boot.

Three things are never up to the options, for the reasons in docs/fuse.md:

* the mount is always ``ro``: the view has no place to write to;
* it is always ``nosuid,nodev``: setuid, setgid and file-capability programs are presented as
  symlinks to the real file (which keeps their privileges), and a nosuid mount is what stops the
  kernel from asking ``security.capability`` on every exec (a round trip per exec saved);
  mount.fuse3 appends ``dev,suid`` on its own, so those words cannot mean a request;
* ``default_permissions`` is always on: the kernel checks modes itself, so ``access`` never
  reaches the daemon.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hwcaps_fs.core.model import Layout
from hwcaps_fs.core.view import Presentation
from hwcaps_fs.errors import UsageError

#: Words mount(8), mount.fuse3, fstab and systemd pass along that mean nothing to a read-only,
#: nosuid, nodev FUSE view; accepted and ignored.
IGNORED_WORDS = frozenset({
    "rw", "ro", "dev", "nodev", "suid", "nosuid", "atime", "noatime", "relatime",
    "norelatime", "strictatime", "nostrictatime", "lazytime", "nolazytime", "diratime",
    "nodiratime", "defaults", "_netdev", "nofail", "auto", "noauto", "user", "nouser",
    "users", "owner", "group", "async", "sync", "dirsync", "silent", "loud", "nomand", "mand",
    "default_permissions",
})

#: What /proc/mounts calls a view: ``fuse.hwcaps-fs`` (``subtype=`` may only add to it).
DEFAULT_SUBTYPE = "hwcaps-fs"

#: Prefixes of options for other programs (systemd, mount(8) comments), ignored.
IGNORED_PREFIXES = ("x-", "comment=")


class Switch(enum.Enum):
    """The value of an on/off option."""

    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class MountOptions:
    """Parsed ``-o`` options.

    FUSE side: ``allow_other`` (default when root: a bin directory is for everyone),
    ``auto_unmount`` (fusermount3 removes the mount if the daemon dies; libfuse then forces
    nosuid, which the symlink presentation of privileged programs makes harmless), ``noexec``,
    ``debug`` (libfuse prints every request on stderr), ``fsname``/``subtype`` (what
    /proc/mounts shows; the type is ``fuse.<subtype>``).

    hwcaps-fs side: ``level`` caps the level served (as ``--level``), ``layout`` the store
    layout (as ``--layout``), ``presentation`` whether names are regular files (default:
    /proc/self/exe, argv[0] and $ORIGIN keep the mounted path) or symlinks to the served
    variant, ``xattr``: with ``off`` getxattr is declined once for all (ENOSYS), the
    ``user.hwcaps.*`` attributes with it (with ``on`` other namespaces answer EOPNOTSUPP, so
    ``ls -l`` asks twice per listing, not twice per entry), ``levels_view`` adds
    ``.hwcaps/<level>/``: what each level up to this CPU's would serve
    (:mod:`hwcaps_fs.core.level_views`), ``loader_links`` (an absolute directory) shows
    links to ``hwcaps-loader`` as links into that directory, a view of the system's
    ``/usr/hwcaps`` (:mod:`hwcaps_fs.core.loader_links`), ``fastpath``: with ``off`` the
    kernel asks the daemon at every exec, as stock pyfuse3 makes it (for debugging;
    docs/fast-path.md).
    """

    allow_other: bool
    auto_unmount: bool = False
    noexec: bool = False
    debug: bool = False
    fsname: str = "hwcaps-fs"
    subtype: str = DEFAULT_SUBTYPE
    level: str | None = None
    layout: Layout | None = None
    presentation: Presentation = Presentation.FILES
    xattr: bool = True
    levels_view: bool = False
    loader_links: str | None = None
    fastpath: bool = True

    def serves_root(self) -> bool:
        """Whether root may execute what the view serves (the daemon runs as root, or every
        user, root included, may use the mount): resolution then refuses what a non-root user
        could have written."""
        return os.geteuid() == 0 or self.allow_other

    def fuse_options(self) -> set[str]:
        """The options handed to libfuse (``pyfuse3.init``)."""
        options = {"ro", "nosuid", "nodev", "default_permissions",
                   f"fsname={self.fsname}", f"subtype={self.subtype}"}
        flags = {"allow_other": self.allow_other, "auto_unmount": self.auto_unmount,
                 "noexec": self.noexec, "debug": self.debug}
        options.update(name for name, on in flags.items() if on)
        return options


_Choice = TypeVar("_Choice", bound=enum.Enum)

#: Why ``noexec`` cannot hold for names presented as symlinks (``presentation=symlinks``, and
#: ``hwcaps-fs run``'s symlink view): the kernel checks an exec at the mount the link leads to.
NOEXEC_THROUGH_LINKS = ("a symlink cannot make anything non-executable (an exec follows it to "
                        "ROOT's own mount)")


#: Options that are a bare word turning something on.
FLAGS = frozenset({"allow_other", "auto_unmount", "noexec", "debug", "levels_view"})

#: Options whose value is one of an enumeration's.
CHOICES: dict[str, type[enum.Enum]] = {
    "layout": Layout, "presentation": Presentation, "xattr": Switch, "fastpath": Switch,
}


#: The ``-o`` options a user may give, as ``mount --help`` and mount.hwcaps-fs(8) list them
#: (tests check that this table and the parser below agree).
DOCUMENTED: tuple[tuple[str, str], ...] = (
    ("allow_other", "every user may use the view (the default when root: a bin directory is "
                    "for everyone)"),
    ("auto_unmount", "if the daemon dies, the mount is removed and the plain directory is back"),
    ("noexec", "programs in the view cannot be executed, setuid ones included (served as "
               "plain files: a link would run the real file); exec undoes it; refused with "
               "presentation=symlinks"),
    ("debug", "libfuse logs every request on stderr; the daemon stays attached to it"),
    ("level=LEVEL", "cap the level served, as --level (the lower of the two wins)"),
    ("layout=glibc|loader", "the store layout, as --layout (default: detected)"),
    ("presentation=files|symlinks", "names are regular files (the default: /proc/self/exe, "
                                    "argv[0] and $ORIGIN keep the mounted path) or symlinks to "
                                    "the served file"),
    ("xattr=on|off", "off declines extended attributes once for all, user.hwcaps.* with them "
                     "(with on, the default, ls -l asks two per listing, not two per entry)"),
    ("fastpath=on|off", "off: the kernel asks the daemon at every exec, as stock pyfuse3 makes "
                        "it (for debugging; see docs/fast-path.md)"),
    ("levels_view", "adds .hwcaps/<level>/ at the top of the view: what a CPU at the baseline "
                    "and at each level this CPU searches would be served"),
    ("loader_links=DIR", "shows every link to hwcaps-loader as a link to DIR/<name>: a system "
                         "packaged for hwcaps-loader, served unchanged (DIR: a view of its "
                         "/usr/hwcaps, loader layout; only root may change it)"),
    ("fsname=NAME", "the source /proc/mounts shows (default: hwcaps-fs)"),
    ("subtype=hwcaps-fs.SUFFIX", "the type /proc/mounts shows is fuse.hwcaps-fs.SUFFIX "
                                 "(default: fuse.hwcaps-fs); always hwcaps-fs first, which is "
                                 "how a view is told from other mounts"),
)

#: Said after the table: what no option changes.
ALWAYS = ("Always in force: ro, nosuid, nodev, default_permissions, and noexec when ROOT's own "
          "mount has it. The generic words mount(8), "
          "fstab and systemd add (rw, dev, suid, defaults, _netdev, nofail, x-systemd.*, ...) "
          "are accepted and ignored; anything else is refused with one line.")


def _choice(kind: type[_Choice], name: str, value: str) -> _Choice:
    try:
        return kind(value)
    except ValueError:
        allowed = "|".join(str(member.value) for member in kind)
        raise UsageError(f"mount option {name}={value}: expected {allowed}") from None


def _subtype(value: str) -> str:
    """A subtype that still says hwcaps-fs: /proc/mounts shows ``fuse.<subtype>``, and that is
    how a mount, umount and a stale-mount check tell a view from any other FUSE mount."""
    if value != DEFAULT_SUBTYPE and not value.startswith(DEFAULT_SUBTYPE + "."):
        raise UsageError(f"mount option subtype={value}: must be {DEFAULT_SUBTYPE} or begin "
                         f"with {DEFAULT_SUBTYPE}. (what tells a view from other mounts)")
    return value


def _split(texts: Sequence[str]) -> list[tuple[str, str | None]]:
    words = [word.strip() for text in texts for word in text.split(",")]
    pairs: list[tuple[str, str | None]] = []
    for word in filter(None, words):
        name, equals, value = word.partition("=")
        pairs.append((name, value if equals else None))
    return pairs


def parse_mount_options(texts: Sequence[str], *, is_root: bool) -> MountOptions:
    """Parse the ``-o`` arguments (each a comma-separated list; later words win).

    Raises :class:`UsageError` naming the first option it does not know, a bad value, or
    ``noexec`` with ``presentation=symlinks`` (:data:`NOEXEC_THROUGH_LINKS`).
    """
    settings: dict[str, Any] = {"allow_other": is_root}
    for name, value in _split(texts):
        word = name if value is None else f"{name}={value}"
        if word in IGNORED_WORDS or word.startswith(IGNORED_PREFIXES):
            continue
        if value is None and name in FLAGS:
            settings[name] = True
        elif value is None and name == "exec":
            settings["noexec"] = False
        elif value and name in {"fsname", "level"}:
            settings[name] = value
        elif value and name == "loader_links":
            if not value.startswith("/"):
                raise UsageError(f"mount option {word}: expected an absolute directory")
            settings[name] = value.rstrip("/") or "/"
        elif value and name == "subtype":
            settings[name] = _subtype(value)
        elif value and name in CHOICES:
            choice = _choice(CHOICES[name], name, value)
            settings[name] = choice is Switch.ON if isinstance(choice, Switch) else choice
        else:
            raise UsageError(f"unknown mount option '{word}'")
    options = MountOptions(**settings)
    if options.noexec and options.presentation is Presentation.SYMLINKS:
        raise UsageError(f"mount option noexec with presentation=symlinks: "
                         f"{NOEXEC_THROUGH_LINKS}")
    return options
