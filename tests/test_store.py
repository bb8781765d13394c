"""Store scanning on real trees: layouts, merging, odd files, symlinks, trust, rescans."""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from hwcaps_fs.core.levels import X86_64
from hwcaps_fs.core.model import Layout, Store, locate
from hwcaps_fs.errors import PathError, show
from hwcaps_fs.store.files import parent
from hwcaps_fs.store.scan import (
    detect_layout,
    rescan_dir,
    rescan_path,
    scan,
    scan_fd,
    scan_path,
)

SCRIPT = "#!/bin/sh\necho {}\n"


def put(root: Path, relpath: str, text: str = "x", mode: int = 0o755) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SCRIPT.format(text))
    path.chmod(mode)
    return path


def levels_of(store: Store, relpath: str) -> set[str | None]:
    return set(store.candidates(relpath))


def test_glibc_layout_merges_trees(tmp_path: Path) -> None:
    put(tmp_path, "bin/foo")
    put(tmp_path, "glibc-hwcaps/x86-64-v3/bin/foo")
    put(tmp_path, "glibc-hwcaps/x86-64-v4/bin/foo")
    put(tmp_path, "glibc-hwcaps/x86-64-v3/libexec/only-v3/tool")
    store = scan(str(tmp_path), X86_64)
    assert store.layout is Layout.GLIBC
    assert levels_of(store, "bin/foo") == {None, "x86-64-v3", "x86-64-v4"}
    assert set(store.files) == {"bin/foo", "libexec/only-v3/tool"}
    assert set(store.dirs) == {"", "bin", "libexec", "libexec/only-v3"}
    assert store.dirs["bin"].ino == (tmp_path / "bin").stat().st_ino
    assert store.dirs["libexec"].ino == (tmp_path / "glibc-hwcaps/x86-64-v3/libexec").stat().st_ino
    v4 = store.files["bin/foo"]["x86-64-v4"]
    assert (v4.path, v4.source, v4.elf, v4.problem) == (
        "glibc-hwcaps/x86-64-v4/bin/foo", "glibc-hwcaps/x86-64-v4/bin/foo", None, None)
    assert v4.ino == (tmp_path / v4.path).stat().st_ino
    assert store.warnings == []


def test_names_share_the_stat_values_they_have_in_common(tmp_path: Path) -> None:
    """What a store of many names holds once per value, not once per name (memory)."""
    for name in ("foo", "bar"):
        put(tmp_path, f"bin/{name}")
    store = scan(str(tmp_path), X86_64)
    foo, bar = (store.files[f"bin/{name}"][None] for name in ("foo", "bar"))
    assert foo.mode == bar.mode and foo.mode is bar.mode
    assert foo.dev is bar.dev and foo.reachable_bits is bar.reachable_bits
    assert foo.reachable_mode is bar.reachable_mode


@pytest.mark.parametrize("relpath", ["", "foo", "bin/foo", "a/b/c", "bin/.x", "bin/x y"])
def test_parent_of_a_view_path_is_its_dirname(relpath: str) -> None:
    assert parent(relpath) == posixpath.dirname(relpath)


def test_loader_layout_detected_and_forced(tmp_path: Path) -> None:
    put(tmp_path, "x86-64-v1/foo")
    put(tmp_path, "x86-64-v2/foo")
    put(tmp_path, "x86-64-v2/bar")
    store = scan(str(tmp_path), X86_64)
    assert store.layout is Layout.LOADER
    assert levels_of(store, "foo") == {None, "x86-64-v2"}
    assert levels_of(store, "bar") == {"x86-64-v2"}
    assert store.files["foo"][None].path == "x86-64-v1/foo"
    forced = scan(str(tmp_path), X86_64, Layout.GLIBC)
    assert set(forced.files) == {"x86-64-v1/foo", "x86-64-v2/foo", "x86-64-v2/bar"}


def test_plain_directory_is_a_glibc_store(tmp_path: Path) -> None:
    put(tmp_path, "foo")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert detect_layout(fd) is Layout.GLIBC
    finally:
        os.close(fd)
    assert levels_of(scan(str(tmp_path), X86_64), "foo") == {None}


def test_unknown_level_dirs(tmp_path: Path) -> None:
    put(tmp_path, "bin/foo")
    put(tmp_path, "glibc-hwcaps/power9/bin/foo")
    put(tmp_path, "glibc-hwcaps/x86-64-v5/bin/foo")
    put(tmp_path, "glibc-hwcaps/x86-64-v1/bin/foo")
    store = scan(str(tmp_path), X86_64)
    assert len(store.warnings) == 3
    text = "\n".join(store.warnings)
    assert "glibc-hwcaps/power9: a level of ppc64le, this store serves x86_64" in text
    assert "glibc-hwcaps/x86-64-v5: not a level name" in text
    assert "glibc-hwcaps/x86-64-v1: not a level directory of the glibc layout" in text
    assert levels_of(store, "bin/foo") == {None}


def test_file_where_another_tree_has_a_directory(tmp_path: Path) -> None:
    put(tmp_path, "tool/inner")
    put(tmp_path, "glibc-hwcaps/x86-64-v3/tool")
    store = scan(str(tmp_path), X86_64)
    assert "tool" in store.dirs and "tool" not in store.files
    assert any("glibc-hwcaps/x86-64-v3/tool" in w for w in store.warnings)


def test_symlinks(tmp_path: Path) -> None:
    put(tmp_path, "bin/real")
    put(tmp_path, "glibc-hwcaps/x86-64-v3/bin/real")
    links = {
        "bin/rel": "real",
        "bin/abs-inside": f"{tmp_path}/bin/real",
        "glibc-hwcaps/x86-64-v3/bin/up": "../../../bin/real",
        "bin/through-dir": "../glibc-hwcaps/x86-64-v3/bin/real",
        "bin/escape": "../../etc",
        "bin/abs-outside": "/bin/sh",
        "bin/loop": "loop2",
        "bin/loop2": "loop",
        "bin/dangling": "nowhere",
        "bin/to-dir": "..",
    }
    for name, target in links.items():
        os.symlink(target, tmp_path / name)
    store = scan(str(tmp_path), X86_64)
    sources = {
        "bin/rel": "bin/real",
        "bin/abs-inside": "bin/real",
        "bin/through-dir": "glibc-hwcaps/x86-64-v3/bin/real",
    }
    for name, source in sources.items():
        candidate = store.files[name][None]
        assert (candidate.source, candidate.problem) == (source, None), name
        assert candidate.ino == (tmp_path / source).stat().st_ino
        assert candidate.link_target == links[name]
    assert store.files["bin/up"]["x86-64-v3"].source == "bin/real"
    problems = {name: store.files[name][None].problem or "" for name in
                ("bin/escape", "bin/abs-outside", "bin/loop", "bin/dangling", "bin/to-dir")}
    assert "leaves" in problems["bin/escape"]
    assert "leaves" in problems["bin/abs-outside"] and "/bin/sh" in problems["bin/abs-outside"]
    assert "loop" in problems["bin/loop"]
    assert "dangling" in problems["bin/dangling"]
    assert problems["bin/to-dir"] == "symlink to the store's root directory"


def test_special_files_are_problems(tmp_path: Path) -> None:
    os.makedirs(tmp_path / "bin")
    os.mkfifo(tmp_path / "bin/fifo")
    os.symlink("fifo", tmp_path / "bin/to-fifo")
    store = scan(str(tmp_path), X86_64)  # must not block on the FIFO
    assert store.files["bin/fifo"][None].problem == "a FIFO, not a regular file"
    assert store.files["bin/to-fifo"][None].problem == "a FIFO, not a regular file"
    if os.geteuid() != 0:
        return
    os.mknod(tmp_path / "bin/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    store = scan(str(tmp_path), X86_64)
    assert store.files["bin/null"][None].problem == "a character device, not a regular file"


def test_malformed_elf_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 20)
    problem = scan(str(tmp_path), X86_64).files["bad"][None].problem
    assert problem is not None and problem.startswith("malformed ELF file: truncated")


def test_unreadable_directory_is_a_warning(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads directories whatever their mode")
    put(tmp_path, "bin/foo")
    (tmp_path / "secret").mkdir(mode=0)
    try:
        store = scan(str(tmp_path), X86_64)
    finally:
        (tmp_path / "secret").chmod(0o755)
    assert any("secret" in w for w in store.warnings)
    assert "bin/foo" in store.files


def test_odd_names(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9"
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o755)
    os.close(fd)
    long_name = "n" * 255
    put(tmp_path, long_name)
    put(tmp_path, f"glibc-hwcaps/x86-64-v2/{long_name}")
    store = scan(str(tmp_path), X86_64)
    odd = os.fsdecode(b"caf\xe9")
    assert odd in store.files
    assert os.fsencode(store.files[odd][None].source) == b"caf\xe9"
    assert levels_of(store, long_name) == {None, "x86-64-v2"}


def test_capability_is_read(tmp_path: Path) -> None:
    path = put(tmp_path, "bin/ping")
    # VFS_CAP_REVISION_2, effective, permitted = CAP_NET_RAW (13)
    value = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
    try:
        os.setxattr(path, "security.capability", value)
    except OSError as exc:
        pytest.skip(f"cannot set file capabilities here: {exc}")
    store = scan(str(tmp_path), X86_64)
    assert store.files["bin/ping"][None].capability == value
    put(tmp_path, "bin/plain")
    assert scan(str(tmp_path), X86_64).files["bin/plain"][None].capability is None


def test_a_scan_that_may_change_directory_reads_what_one_through_proc_reads(
        tmp_path: Path) -> None:
    """The first scan's child reads baselines' extended attributes by names relative to the
    working directory (``chdir``): the same capabilities, ACL bits and symlinks followed."""
    ping = put(tmp_path, "bin/ping")
    put(tmp_path, "bin/plain")
    put(tmp_path, "libexec/deep/tool")
    (tmp_path / "bin/link").symlink_to("../libexec/deep/tool")
    put(tmp_path, "glibc-hwcaps/x86-64-v2/bin/plain")
    try:
        os.setxattr(ping, "security.capability", struct.pack("<IIIII", 0x02000001, 1 << 13,
                                                             0, 0, 0))
    except OSError as exc:
        pytest.skip(f"cannot set file capabilities here: {exc}")
    if shutil.which("setfacl") is not None:
        subprocess.run(["setfacl", "-m", "u:nobody:---", str(tmp_path / "libexec/deep/tool")],
                       check=True)
    root_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    cwd = os.getcwd()
    try:
        through_proc, relative = (scan_fd(root_fd, str(tmp_path), X86_64, read_baselines=False,
                                          chdir=chdir) for chdir in (False, True))
    finally:
        os.chdir(cwd)
        os.close(root_fd)
    assert relative == through_proc
    assert relative.files["bin/ping"][None].capability is not None
    assert relative.files["bin/link"][None].source == "libexec/deep/tool"
    if shutil.which("setfacl") is not None:  # the ACL was read: others lose their bits
        assert relative.files["bin/link"][None].reachable_bits & 0o007 == 0


def test_untrusted(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to own the store")
    os.chown(tmp_path, 0, 0)
    tmp_path.chmod(0o755)
    put(tmp_path, "bin/foo")
    put(tmp_path, "sticky/foo")
    put(tmp_path, "glibc-hwcaps/x86-64-v3/bin/foo")
    (tmp_path / "sticky").chmod(0o1777)
    (tmp_path / "glibc-hwcaps").chmod(0o775)
    store = scan(str(tmp_path), X86_64)
    writable = "directory {} is writable by a non-root user".format
    assert store.files["bin/foo"][None].untrusted is None
    assert store.files["sticky/foo"][None].untrusted is None
    assert store.files["bin/foo"]["x86-64-v3"].untrusted == writable("glibc-hwcaps")
    os.chown(tmp_path / "bin", 1000, 1000)
    assert scan(str(tmp_path), X86_64).files["bin/foo"][None].untrusted == writable("bin")
    tmp_path.chmod(0o777)
    assert scan(str(tmp_path), X86_64).files["bin/foo"][None].untrusted == writable(".")


def test_root_errors(tmp_path: Path) -> None:
    with pytest.raises(PathError, match="no such directory"):
        scan(str(tmp_path / "missing"), X86_64)
    put(tmp_path, "file")
    with pytest.raises(PathError, match="not a directory"):
        scan(str(tmp_path / "file"), X86_64)


def test_rescans_through_the_root_fd(tmp_path: Path) -> None:
    put(tmp_path, "bin/foo")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        store = scan_fd(fd, str(tmp_path), X86_64)
        assert levels_of(store, "bin/foo") == {None}
        put(tmp_path, "glibc-hwcaps/x86-64-v3/bin/foo")
        assert set(scan_path(store, fd, "bin/foo")) == {None, "x86-64-v3"}
        assert levels_of(store, "bin/foo") == {None}  # scan_path changes nothing
        rescan_path(store, fd, "bin/foo")
        assert levels_of(store, "bin/foo") == {None, "x86-64-v3"}
        (tmp_path / "bin/foo").unlink()
        (tmp_path / "glibc-hwcaps/x86-64-v3/bin/foo").unlink()
        rescan_path(store, fd, "bin/foo")
        assert "bin/foo" not in store.files
        put(tmp_path, "glibc-hwcaps/x86-64-v2/bin/sub/new")
        put(tmp_path, "bin/sub/old")
        assert rescan_dir(store, fd, "bin") == []
        assert set(store.files) == {"bin/sub/new", "bin/sub/old"}
        assert "bin/sub" in store.dirs
        put(tmp_path, "top")
        rescan_dir(store, fd, "")
        assert "top" in store.files
    finally:
        os.close(fd)


def test_locate(tmp_path: Path) -> None:
    glibc = Store(str(tmp_path), Layout.GLIBC, X86_64)
    assert locate(glibc, "bin/foo") == (None, "bin/foo")
    assert locate(glibc, "glibc-hwcaps/x86-64-v3/bin/foo") == ("x86-64-v3", "bin/foo")
    assert locate(glibc, "glibc-hwcaps/x86-64-v3") == ("x86-64-v3", "")
    assert locate(glibc, "glibc-hwcaps/power9/foo") is None
    assert locate(glibc, "glibc-hwcaps") is None
    loader = Store(str(tmp_path), Layout.LOADER, X86_64)
    assert locate(loader, "x86-64-v1/foo") == (None, "foo")
    assert locate(loader, "x86-64-v4/a/b") == ("x86-64-v4", "a/b")
    assert locate(loader, "README") is None


@pytest.mark.parametrize(("name", "shown"), [
    ("bin/foo", "bin/foo"),
    ("my prog", "my prog"),
    ("a\nforged line", "'a\\nforged line'"),
    ("\x1b[2Jclear", "'\\x1b[2Jclear'"),
    ("it's\t", "'it\\'s\\t'"),
    (os.fsdecode(b"caf\xe9"), "'caf\\xe9'"),
    ("right\u202eleft", "'right\\u202eleft'"),
])
def test_names_are_shown_quoted_when_not_printable(name: str, shown: str) -> None:
    assert show(name) == shown
    assert show(shown) == shown
