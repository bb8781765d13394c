"""The permission bits a view may show: never more than the directories above a file allow."""

from __future__ import annotations

import stat
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwcaps_fs.core.access import (
    PERMISSION_BITS,
    UNKNOWN_DIR,
    AclTag,
    DirAccess,
    acl_bits,
    reachable_bits,
    searchable_by_all,
)

PUBLIC = DirAccess(0, 0, stat.S_IFDIR | 0o755)
ROOT_ONLY = DirAccess(0, 0, stat.S_IFDIR | 0o700)
ADM_ONLY = DirAccess(0, 4, stat.S_IFDIR | 0o750)


@pytest.mark.parametrize(
    ("owner", "directories", "bits"),
    [
        ((0, 0), [PUBLIC, PUBLIC], PERMISSION_BITS),
        ((0, 0), [], PERMISSION_BITS),
        ((0, 0), [PUBLIC, ROOT_ONLY], 0o700),
        ((1000, 1000), [PUBLIC, ROOT_ONLY], 0),
        ((0, 4), [ADM_ONLY], 0o770),
        ((0, 0), [ADM_ONLY], 0o700),
        ((1000, 1000), [DirAccess(1000, 1000, stat.S_IFDIR | 0o700)], 0o700),
        ((1000, 1000), [DirAccess(1000, 1000, stat.S_IFDIR | 0o711)], PERMISSION_BITS),
        ((1000, 1000), [DirAccess(2000, 1000, stat.S_IFDIR | 0o710)], 0o070),
    ],
)
def test_known_cases(owner: tuple[int, int], directories: list[DirAccess], bits: int) -> None:
    assert reachable_bits(*owner, directories) == bits


#: A small world: uids 1-3 (root is never refused a search) and gids 0-2.
UIDS = (1, 2, 3)
GIDS = (0, 1, 2)


def allowed(uid: int, groups: frozenset[int], owner: int, group: int, mode: int,
            want: int) -> bool:
    """The kernel's check for a non-root user: the first matching class decides."""
    if uid == owner:
        bits = mode >> 6
    elif group in groups:
        bits = mode >> 3
    else:
        bits = mode
    return bits & want == want


objects = st.tuples(st.sampled_from((0, *UIDS)), st.sampled_from(GIDS),
                    st.integers(0, 0o777))


@settings(max_examples=500)
@given(memberships=st.tuples(*(st.frozensets(st.sampled_from(GIDS)) for _ in UIDS)),
       directories=st.lists(objects, max_size=3), file=objects)
def test_the_view_never_allows_what_the_real_path_refuses(
    memberships: tuple[frozenset[int], ...], directories: list[tuple[int, int, int]],
    file: tuple[int, int, int],
) -> None:
    owner, group, mode = file
    shown = mode & reachable_bits(owner, group, [DirAccess(*d) for d in directories])
    for uid, groups in zip(UIDS, memberships, strict=True):
        for want in (4, 2, 1):
            through_view = allowed(uid, groups, owner, group, shown, want)
            real = all(allowed(uid, groups, *d, 1) for d in directories) and allowed(
                uid, groups, owner, group, mode, want)
            assert real or not through_view, (uid, groups, want)


def acl(*entries: tuple[AclTag, int]) -> bytes:
    """A ``system.posix_acl_access`` value with ``entries`` (tag, permissions), ids 1000."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 1000)
                                            for tag, perm in entries)


BASE = ((AclTag.USER_OBJ, 0o7), (AclTag.GROUP_OBJ, 0o5), (AclTag.OTHER, 0o5))


@pytest.mark.parametrize(
    ("data", "bits"),
    [
        (None, PERMISSION_BITS),
        (acl(*BASE), 0o755),
        (acl(*BASE, (AclTag.USER, 0), (AclTag.MASK, 0o5)), 0o700),
        (acl(*BASE, (AclTag.GROUP, 0o7), (AclTag.MASK, 0o4)), 0o744),
        (acl(*BASE, (AclTag.USER, 0o7), (AclTag.MASK, 0o7)), 0o755),
        (b"\x02\x00", 0o700),
        (struct.pack("<I", 1), 0o700),
    ],
)
def test_acl_bits(data: bytes | None, bits: int) -> None:
    assert acl_bits(data) == bits


def test_an_acl_on_a_directory_counts_as_its_mode() -> None:
    denies_named = DirAccess(0, 0, stat.S_IFDIR | 0o755,
                             acl_bits(acl(*BASE, (AclTag.USER, 0), (AclTag.MASK, 0o5))))
    assert reachable_bits(0, 0, [denies_named]) == 0o700


@pytest.mark.parametrize(("directories", "searchable"), [
    ([], True),
    ([PUBLIC, PUBLIC], True),
    ([PUBLIC, DirAccess(0, 0, stat.S_IFDIR | 0o711)], True),
    ([PUBLIC, ROOT_ONLY], False),
    ([ADM_ONLY], False),
    ([DirAccess(0, 0, stat.S_IFDIR | 0o755, acl=0o750)], False),  # an ACL keeps someone out
    ([UNKNOWN_DIR], False),
])
def test_searchable_by_all(directories: list[DirAccess], searchable: bool) -> None:
    """Whether a bind mount of what is below ``directories`` would let in nobody they keep
    out (the in-place view's bind mount is made only then)."""
    assert searchable_by_all(directories) is searchable
