"""The view as data: what each name serves, how it is presented, which inodes stay stable."""

from __future__ import annotations

import dataclasses
import stat
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from hwcaps_fs.core.levels import X86_64
from hwcaps_fs.core.model import Candidate, DirInfo, Layout, Store
from hwcaps_fs.core.resolve import Resolution
from hwcaps_fs.core.view import (
    ROOT_INODE,
    XATTR_LEVEL,
    XATTR_SOURCE,
    InodeNumbers,
    Presentation,
    View,
    build_view,
    changed_entries,
    diff,
    patch_view,
)


def candidate(level: str | None, relpath: str, *, ino: int = 100, mode: int = 0o100755,
              mtime_ns: int = 1_000, size: int = 1234,
              capability: bytes | None = None) -> Candidate:
    path = relpath if level is None else f"glibc-hwcaps/{level}/{relpath}"
    return Candidate(level=level, path=path, source=path, mode=mode, uid=0, gid=0, size=size,
                     ino=ino, dev=1, nlink=1, atime_ns=500, mtime_ns=mtime_ns,
                     ctime_ns=mtime_ns, capability=capability)


def directory(relpath: str, mtime_ns: int = 10) -> DirInfo:
    return DirInfo(path=relpath, mode=stat.S_IFDIR | 0o755, uid=0, gid=0, size=4096, nlink=2,
                   ino=1, dev=1, atime_ns=5, mtime_ns=mtime_ns, ctime_ns=mtime_ns)


def store_of(*dirs: str) -> Store:
    return Store("/store", Layout.GLIBC, X86_64, dirs={d: directory(d) for d in ("", *dirs)})


def build(store: Store, served: Mapping[str, Candidate | None], numbers: InodeNumbers, *,
          presentation: Presentation = Presentation.FILES,
          link_base: str | None = "/store") -> View:
    resolutions = [Resolution(relpath, found, ()) for relpath, found in served.items()]
    return build_view(store, resolutions, presentation=presentation, link_base=link_base,
                      numbers=numbers)


def lookup(view: View, relpath: str) -> int | None:
    inode: int | None = ROOT_INODE
    for part in relpath.split("/"):
        inode = view.children.get(inode, {}).get(part.encode()) if inode else None
    return inode


def test_names_serve_the_resolved_candidate_with_its_attributes() -> None:
    v3 = candidate("x86-64-v3", "bin/foo", mtime_ns=42, size=777)
    view = build(store_of("bin", "bin/sub"), {"bin/foo": v3, "bin/nothing": None},
                 InodeNumbers())
    assert [name for name, _ in view.listing[ROOT_INODE]] == [b"bin"]
    bin_ino = lookup(view, "bin")
    assert bin_ino is not None
    assert [name for name, _ in view.listing[bin_ino]] == [b"foo", b"sub"]
    foo = view.nodes[lookup(view, "bin/foo") or 0]
    assert foo.served == v3 and foo.link_target is None
    assert (foo.attributes.mode, foo.attributes.size, foo.attributes.mtime_ns) == (
        0o100755, 777, 42)
    assert foo.attributes.blocks == 2
    assert foo.xattrs == {XATTR_LEVEL: b"x86-64-v3",
                          XATTR_SOURCE: b"glibc-hwcaps/x86-64-v3/bin/foo"}
    assert view.nodes[bin_ino].attributes.nlink == 3  # ".", its entry, and sub's ".."
    assert lookup(view, "bin/nothing") is None


def test_baseline_says_baseline() -> None:
    view = build(store_of("bin"), {"bin/foo": candidate(None, "bin/foo")}, InodeNumbers())
    node = view.nodes[lookup(view, "bin/foo") or 0]
    assert node.xattrs and node.xattrs[XATTR_LEVEL] == b"baseline"


def test_privileged_programs_are_links_to_the_real_file() -> None:
    served = {
        "bin/suid": candidate(None, "bin/suid", mode=0o104755, ino=1),
        "bin/sgid": candidate(None, "bin/sgid", mode=0o102755, ino=2),
        "bin/caps": candidate("x86-64-v2", "bin/caps", capability=b"\x01", ino=3),
        "bin/plain": candidate(None, "bin/plain", ino=4),
    }
    view = build(store_of("bin"), served, InodeNumbers(), link_base="/run/hwcaps-fs/x")
    kinds = {name: stat.S_IFMT(view.nodes[lookup(view, name) or 0].attributes.mode)
             for name in served}
    assert kinds == {"bin/suid": stat.S_IFLNK, "bin/sgid": stat.S_IFLNK,
                     "bin/caps": stat.S_IFLNK, "bin/plain": stat.S_IFREG}
    caps = view.nodes[lookup(view, "bin/caps") or 0]
    assert caps.link_target == b"/run/hwcaps-fs/x/glibc-hwcaps/x86-64-v2/bin/caps"
    assert caps.attributes.size == len(caps.link_target)


def test_without_a_link_base_everything_is_a_file() -> None:
    served = {"bin/suid": candidate(None, "bin/suid", mode=0o104755)}
    view = build(store_of("bin"), served, InodeNumbers(), link_base=None,
                 presentation=Presentation.SYMLINKS)
    assert stat.S_ISREG(view.nodes[lookup(view, "bin/suid") or 0].attributes.mode)


def test_symlinks_presentation_links_every_file() -> None:
    served = {"bin/a": candidate(None, "bin/a", ino=1), "bin/b": candidate(None, "bin/b", ino=2)}
    view = build(store_of("bin"), served, InodeNumbers(), presentation=Presentation.SYMLINKS)
    assert all(view.nodes[lookup(view, name) or 0].link_target == f"/store/{name}".encode()
               for name in served)


def test_inodes_are_stable_until_the_served_file_changes() -> None:
    numbers = InodeNumbers()
    store = store_of("bin")
    served = {"bin/foo": candidate("x86-64-v3", "bin/foo"),
              "bin/bar": candidate(None, "bin/bar", ino=7)}
    first = build(store, served, numbers)
    again = build(store, served, numbers)
    assert first.children == again.children
    assert changed_entries(first, again) == []

    replaced = {**served, "bin/foo": dataclasses.replace(served["bin/foo"], ino=101)}
    third = build(store, replaced, numbers)
    bin_ino = lookup(third, "bin") or 0
    assert lookup(third, "bin/bar") == lookup(first, "bin/bar")
    assert lookup(third, "bin/foo") not in first.nodes
    assert changed_entries(first, third) == [(bin_ino, b"foo")]


def test_chmod_or_another_level_is_a_new_inode() -> None:
    numbers = InodeNumbers()
    store = store_of("bin")
    v3 = candidate("x86-64-v3", "bin/foo")
    base = build(store, {"bin/foo": v3}, numbers)
    chmodded = build(store, {"bin/foo": dataclasses.replace(v3, mode=0o100700)}, numbers)
    other = build(store, {"bin/foo": candidate("x86-64-v2", "bin/foo")}, numbers)
    inodes = {lookup(view, "bin/foo") for view in (base, chmodded, other)}
    assert len(inodes) == 3


def test_numbers_are_never_reused() -> None:
    numbers = InodeNumbers()
    store = store_of("bin")
    foo = candidate(None, "bin/foo")
    with_foo = build(store, {"bin/foo": foo}, numbers)
    without = build(store, {}, numbers)
    back = build(store, {"bin/foo": foo}, numbers)
    assert changed_entries(with_foo, without) == [(lookup(without, "bin"), b"foo")]
    assert changed_entries(without, back) == [(lookup(back, "bin"), b"foo")]
    assert lookup(back, "bin/foo") != lookup(with_foo, "bin/foo")
    assert len(numbers) == len(back.nodes)  # the table follows the store, not its history


def test_directory_changes() -> None:
    numbers = InodeNumbers()
    before = build(store_of("bin"), {}, numbers)
    store = store_of("bin", "sbin")
    store.dirs["bin"] = directory("bin", mtime_ns=99)
    after = build(store, {}, numbers)
    assert lookup(after, "bin") == lookup(before, "bin")
    assert diff(before, after).changed == [ROOT_INODE, lookup(after, "bin")]
    assert changed_entries(before, after) == [(ROOT_INODE, b"sbin")]


def test_a_file_colliding_with_a_directory_or_without_a_directory_is_left_out() -> None:
    served = {"bin": candidate(None, "bin"), "gone/foo": candidate(None, "gone/foo")}
    view = build(store_of("bin"), served, InodeNumbers())
    assert view.nodes[lookup(view, "bin") or 0].is_directory
    assert len(view.nodes) == 2


def test_a_patch_is_what_a_full_build_gives_and_says_what_changed() -> None:
    store = store_of("bin")
    numbers = InodeNumbers()
    before = {"bin/foo": candidate(None, "bin/foo", ino=1), "bin/bar": candidate(None, "bin/bar"),
              "bin/gone": candidate(None, "bin/gone", ino=3)}
    old = build(store, before, numbers)
    touched = {"bin/foo": candidate("x86-64-v3", "bin/foo", ino=2), "bin/gone": None,
               "bin/new": candidate(None, "bin/new", ino=4), "bin/bar": before["bin/bar"]}
    update = patch_view(old, [Resolution(path, found, ()) for path, found in touched.items()],
                        presentation=Presentation.FILES, link_base="/store", numbers=numbers)
    after = {**before, **touched}
    full = build(store, after, numbers)
    assert update.view.children == full.children
    assert update.view.listing == full.listing
    assert update.view.nodes == full.nodes
    bin_ino = lookup(old, "bin")
    assert sorted(update.entries) == [(bin_ino, b"foo"), (bin_ino, b"gone"), (bin_ino, b"new")]
    assert set(update.removed) == {lookup(old, "bin/foo"), lookup(old, "bin/gone")}
    assert set(update.added) == {lookup(full, "bin/foo"), lookup(full, "bin/new")}
    assert update.view.nodes[lookup(full, "bin/bar") or 0] is old.nodes[lookup(old, "bin/bar") or 0]
    assert len(numbers) == 1 + 1 + 3  # ROOT, bin, and the three files served: gone forgotten


def ancestors(relpath: str) -> list[str]:
    """The directories above ``relpath``, ROOT ("") left out."""
    parts = relpath.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


#: Paths of a small tree for the property below: directories and files, some at the same path.
TREE = ("a", "a/b", "a/b/c", "d", "a/f", "a/b/f", "a/b/c/f", "d/f", "f", "a/b/c/g", "d/g")


@settings(max_examples=300, deadline=None)
@given(before=st.dictionaries(st.sampled_from(TREE), st.sampled_from(["dir", 1, 2])),
       after=st.dictionaries(st.sampled_from(TREE), st.sampled_from(["dir", 1, 2])),
       mtime=st.integers(10, 11))
def test_a_patch_of_directories_is_what_a_full_build_and_diff_give(
        before: dict[str, str | int], after: dict[str, str | int], mtime: int) -> None:
    """Directories appearing, leaving (with what is below them), turning into files and back,
    and changing attributes: the patched view, its inode numbers and what it says changed
    are those of a full build and its diff (entries: the kernel forgets a directory's
    subtree with its entry, so only entries outside a removed directory must be listed)."""

    def store_with(shape: dict[str, str | int],
                   a_mtime: int) -> tuple[Store, dict[str, Candidate | None]]:
        dirs = {path for path, kind in shape.items() if kind == "dir"}
        dirs |= {parent for path in shape for parent in ancestors(path)}
        store = store_of(*dirs)
        if "a" in store.dirs:
            store.dirs["a"] = directory("a", mtime_ns=a_mtime)
        files: dict[str, Candidate | None] = {
            path: candidate(None, path, ino=kind) for path, kind in shape.items()
            if isinstance(kind, int)}
        return store, files

    old_store, old_files = store_with(before, 10)
    new_store, new_files = store_with(after, mtime)
    numbers = InodeNumbers()
    old = build(old_store, old_files, numbers)
    touched = {path: new_files.get(path) for path in {*old_files, *new_files}}
    update = patch_view(old, [Resolution(path, found, ()) for path, found in touched.items()],
                        presentation=Presentation.FILES, link_base="/store", numbers=numbers,
                        dirs=new_store.dirs)
    numbered = len(numbers)
    full = build(new_store, new_files, numbers)  # numbers every key again, forgets the rest
    assert len(numbers) == numbered
    assert update.view.nodes == full.nodes
    assert update.view.children == full.children
    assert update.view.listing == full.listing
    assert update.view.directories == full.directories
    expected = diff(old, full)
    assert sorted(update.added) == sorted(expected.added)
    assert sorted(update.removed) == sorted(expected.removed)
    assert sorted(update.changed) == sorted(expected.changed)
    removed_dirs = {ino for ino in expected.removed if old.nodes[ino].is_directory}
    assert sorted(set(update.entries)) == sorted(
        (parent, name) for parent, name in set(expected.entries) if parent not in removed_dirs)
