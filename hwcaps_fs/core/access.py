"""Who may reach a file through the directories above it, as permission bits the view can show.

An ``allow_other`` mount answers every user with the attributes it presents, and the kernel
(``default_permissions``) checks only those. A file's own mode is not the whole story on disk:
to open ``glibc-hwcaps/x86-64-v3/bin/foo`` a user must also be able to search every directory
above it, ROOT's parents included. If the view showed the file's mode unchanged, a user whom a
``0700`` variant directory keeps out would run and read that build through the mount.

So the view clears the permission bits of each class (owner, group, other) of the file whose
members might be unable to search one of those directories. Group memberships are not known
here (and change), so the rule is conservative: a class keeps its bits only when *every* class
of the directory its members might fall into has the search bit. Someone may therefore be
refused through the view what the real path would allow; nobody is allowed what it refuses.
Root is never refused a search, so root-owned files keep their owner bits.

POSIX ACLs count the same way (:func:`acl_bits`): an ACL can refuse a named user or group
what the mode grants to the class they fall into, and the view, which shows only a mode, cannot
tell who is who. So where a file or a directory on the way has an extended ACL, group and
others keep only what *every* entry but the owner's grants (named entries and the group's
limited by the mask), which never exceeds what any of them would be granted on the real path.
"""

from __future__ import annotations

import enum
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass


class Class(enum.Enum):
    """The three classes of a permission check, by the bits that apply to them."""

    OWNER = stat.S_IRWXU
    GROUP = stat.S_IRWXG
    OTHER = stat.S_IRWXO

    @property
    def search_bit(self) -> int:
        return self.value & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


#: Every permission bit a class can hold.
PERMISSION_BITS = stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO


#: The extended attribute that holds a file's access ACL (``system.posix_acl_default`` only
#: says what new files inherit, and so decides nobody's access).
ACL_XATTR = "system.posix_acl_access"

#: The layout of that attribute: a version word, then (tag, permissions, id) entries.
_ACL_HEADER = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")
_ACL_VERSION = 2


class AclTag(enum.IntEnum):
    """The kinds of ACL entries (linux/posix_acl.h)."""

    USER_OBJ = 0x01
    USER = 0x02
    GROUP_OBJ = 0x04
    GROUP = 0x08
    MASK = 0x10
    OTHER = 0x20


#: The entries the mask limits.
MASKED_TAGS = frozenset({AclTag.USER, AclTag.GROUP_OBJ, AclTag.GROUP})


def acl_bits(data: bytes | None) -> int:
    """The permission bits a file or directory with the access ACL ``data`` (the raw
    ``system.posix_acl_access`` value, None when it has none) grants every member of a class
    for sure: the owner's as the mode says; for group and others, what every entry other than
    the owner's grants. An ACL that cannot be parsed leaves the owner's bits only."""
    if data is None:
        return PERMISSION_BITS
    try:
        (version,) = _ACL_HEADER.unpack_from(data)
        entries = [(tag, perm & 0o7) for tag, perm, _ in
                   _ACL_ENTRY.iter_unpack(data[_ACL_HEADER.size:])]
    except struct.error:
        return stat.S_IRWXU
    if version != _ACL_VERSION:
        return stat.S_IRWXU
    mask = next((perm for tag, perm in entries if tag == AclTag.MASK), 0o7)
    floor = 0o7
    for tag, perm in entries:
        if tag in MASKED_TAGS:
            floor &= perm & mask
        elif tag == AclTag.OTHER:
            floor &= perm
    return stat.S_IRWXU | floor << 3 | floor


def extended(bits: int) -> bool:
    """Whether :func:`acl_bits` came from an ACL that takes something away."""
    return bits != PERMISSION_BITS


@dataclass(frozen=True, slots=True)
class DirAccess:
    """The owner, group and mode of one directory above a file: what searching it takes.
    ``acl`` is :func:`acl_bits` of its access ACL."""

    uid: int
    gid: int
    mode: int
    acl: int = PERMISSION_BITS

    @property
    def granted_mode(self) -> int:
        """The mode as far as every member of each class can count on it."""
        return restricted(self.mode, self.acl)


#: What a directory that cannot be stat'ed counts as: nobody's, writable by others, searchable
#: by no one (so nothing below it is trusted or shown as reachable by anyone but root).
UNKNOWN_DIR = DirAccess(uid=-1, gid=-1, mode=stat.S_IFDIR | stat.S_IWOTH)


def classes_in(directory: DirAccess, who: Class, uid: int, gid: int) -> frozenset[Class]:
    """The classes of ``directory`` that a member of class ``who`` of a file owned by
    ``uid:gid`` may fall into. An empty set means unconstrained (root).

    The file's owner is the directory's owner when the uids match, and otherwise in its group
    or not (unknown). A member of the file's group, or anyone else, may be the directory's owner
    unless that owner is the file's owner; a member of the file's group is in the directory's
    group when the gids match, anyone else then is not.
    """
    if who is Class.OWNER:
        if uid == 0:
            return frozenset()
        if directory.uid == uid:
            return frozenset({Class.OWNER})
        return frozenset({Class.GROUP, Class.OTHER})
    may_own = {Class.OWNER} if directory.uid not in (0, uid) else set()
    if directory.gid == gid:
        return frozenset({*may_own, Class.GROUP if who is Class.GROUP else Class.OTHER})
    return frozenset({*may_own, Class.GROUP, Class.OTHER})


def restricted(mode: int, bits: int) -> int:
    """``mode`` with only the permission bits among ``bits`` left (type and setuid, setgid and
    sticky bits unchanged): what a view shows, given :func:`reachable_bits`."""
    return mode & (~PERMISSION_BITS | bits)


def reachable_bits(uid: int, gid: int, directories: Iterable[DirAccess]) -> int:
    """The permission bits of a file owned by ``uid:gid`` that survive ``directories`` (every
    directory that must be searched to reach it): each class keeps its bits only if all the
    directory classes its members may fall into have the search bit, in every directory."""
    kept = PERMISSION_BITS
    for directory in directories:
        for who in Class:
            if kept & who.value and any(not directory.granted_mode & where.search_bit
                                        for where in classes_in(directory, who, uid, gid)):
                kept &= ~who.value
    return kept


def searchable_by_all(directories: Iterable[DirAccess]) -> bool:
    """Whether every user may search each of ``directories`` (every class has the search bit,
    ACLs counted): then nothing on the way keeps anyone from what lies below them."""
    every = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    return all(directory.granted_mode & every == every for directory in directories)


def writable_by_others(uid: int, mode: int) -> bool:
    """Whether someone other than root may replace what a file or directory holds: it is not
    root's, or it is group/other-writable (for a directory, unless sticky)."""
    if uid != 0:
        return True
    if stat.S_ISDIR(mode) and mode & stat.S_ISVTX:
        return False
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))
