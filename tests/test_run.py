"""``hwcaps-fs run``: mount, then exec CMD. Real variant programs, real mounts, real namespaces.

Every test runs the command line in a subprocess and waits for its stdio to close: the keeper
(see hwcaps_fs.commands.run) holds stderr until it has removed the view and reaped the daemon,
so when ``communicate`` returns nothing of the run may be left. The ``area`` fixture kills and
detaches whatever a failing test leaves behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest

from hwcaps_fs.commands.symlink_view import (
    plan_symlink_view,
    remove_symlink_view,
    write_symlink_view,
)
from hwcaps_fs.core.levels import X86_64
from hwcaps_fs.core.mount_options import MountOptions
from hwcaps_fs.core.resolve import Target, resolve_store
from hwcaps_fs.core.view_options import apply_view_options
from hwcaps_fs.store.scan import scan
from hwcaps_fs.system.mountinfo import parse_mountinfo
from tests.builders import compile_level, install
from tests.mounting import DEADLINE, ENVIRONMENT, assert_one_line_error
from tests.places import OthersPython, public_temporary_directory
from tests.test_loader_systems import solus_system
from tests.users import AS_NOBODY, User

VARIANTS = ("x86-64-v2", "x86-64-v3", "x86-64-v4")

#: Makes /dev/fuse unusable in a private mount namespace, then runs "$@".
WITHOUT_FUSE = 'mount --bind /dev/null /dev/fuse && exec "$@"'

#: Binds a FUSE device node of mode $2 over /dev/fuse in a private mount namespace (whatever
#: the host's mode is), then runs "$@"; $1 is a directory for the node.
FUSE_NODE_OF_MODE = ('dev=$1; mode=$2; shift 2; mount -t tmpfs tmpfs "$dev" && mknod -m "$mode" '
                     '"$dev/fuse" c 10 229 && mount --bind "$dev/fuse" /dev/fuse && exec "$@"')

#: In a user namespace of its own (mapped to root), forbids further user namespaces, makes
#: /dev/fuse unusable and drops CAP_SYS_ADMIN, then runs "$@": no private namespace can be
#: had, as in Docker without --cap-add SYS_ADMIN.
CONFINED = ('echo 0 > /proc/sys/user/max_user_namespaces && mount --bind /dev/null /dev/fuse '
            '&& exec setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin "$@"')

mount = pytest.mark.usefixtures("fuse_ok")


def _leftovers(marker: Path) -> list[int]:
    """Processes whose command line mentions ``marker`` (the keeper and the daemon do)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if os.fsencode(marker) in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def _host_mounts_under(area: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="surrogateescape")
    return [entry.mountpoint for entry in parse_mountinfo(text)
            if entry.mountpoint.startswith(f"{area}/")]


@pytest.fixture
def area() -> Iterator[Path]:
    """A directory every user can read (the non-root tests need it), torn down whatever
    happens: leftover processes killed, leftover mounts detached."""
    path = public_temporary_directory("hwcaps-fs-run-test.")
    try:
        yield path
    finally:
        for pid in _leftovers(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for mountpoint in reversed(_host_mounts_under(path)):
            subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)
        shutil.rmtree(path)


@pytest.fixture
def store(area: Path, binaries: Path) -> Path:
    """``bin/prog``: a baseline and v2/v3/v4 variants, each printing its level."""
    root = area / "store"
    install(compile_level(binaries, "baseline"), root / "bin" / "prog")
    for variant in VARIANTS:
        install(compile_level(binaries, variant), root / "glibc-hwcaps" / variant / "bin" / "prog")
    return root


def served_path(store: Path, level: str) -> Path:
    if level == "baseline":
        return store / "bin" / "prog"
    return store / "glibc-hwcaps" / level / "bin" / "prog"


def hwcaps_fs_run(root: Path, mountpoint: Path | None, *command: str,
                  python: OthersPython | None = None, given: Sequence[str] = ()) -> list[str]:
    """The command line of ``run``, with the options ``given`` (``-o``, ``--layout``...)."""
    where = [] if mountpoint is None else ["--mountpoint", str(mountpoint)]
    interpreter = python.argv if python else [sys.executable]
    return [*interpreter, "-m", "hwcaps_fs", "run", "--root", str(root), *where, *given, "--",
            *command]


def execute(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE, check=False,
                          env={**ENVIRONMENT, **(env or {})}, cwd="/")


def assert_nothing_left(area: Path) -> None:
    assert _leftovers(area) == [], "a keeper or daemon outlived CMD"
    assert _host_mounts_under(area) == [], "a mount leaked to the host"


def fallback_line(store: Path, mountpoint: Path, reason: str) -> str:
    return (f"hwcaps-fs: FUSE unavailable ({reason}): serving a symlink view of {store} "
            f"in {mountpoint}")


def skip_without(*programs: str) -> None:
    for program in programs:
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed")


def skip_without_userns() -> None:
    """Skip unless nobody may create a user namespace, with the kernel's reason."""
    skip_without("runuser", "unshare")
    probe = subprocess.run([*AS_NOBODY, "unshare", "--user", "--mount", "true"],
                           capture_output=True, text=True, check=False)
    if probe.returncode:
        limit = Path("/proc/sys/user/max_user_namespaces")
        knob = Path("/proc/sys/kernel/unprivileged_userns_clone")
        why = ", ".join(f"{path}={path.read_text().strip()}" for path in (limit, knob)
                        if path.exists())
        pytest.skip(f"unprivileged user namespaces unavailable: {probe.stderr.strip()} {why}")


# -- the symlink view, without mounts ----------------------------------------------------


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {text}\n")
    path.chmod(0o755)


def test_symlink_view_serves_best_variant_and_merges_directories(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _script(root / "bin" / "foo", "baseline")
    _script(root / "glibc-hwcaps" / "x86-64-v3" / "bin" / "foo", "v3")
    _script(root / "glibc-hwcaps" / "x86-64-v4" / "bin" / "foo", "v4")
    _script(root / "glibc-hwcaps" / "x86-64-v2" / "libexec" / "only-v2", "v2")
    arch = X86_64
    store = scan(str(root), arch)
    target = Target(arch, ("x86-64-v3", "x86-64-v2"), None, require_trusted=False)

    view = plan_symlink_view(store.dirs, resolve_store(store, target).values())

    assert [path for path, _ in view.dirs] == ["bin", "libexec"]
    assert view.links == (("bin/foo", "glibc-hwcaps/x86-64-v3/bin/foo"),
                          ("libexec/only-v2", "glibc-hwcaps/x86-64-v2/libexec/only-v2"))
    top = tmp_path / "view"
    top.mkdir()
    write_symlink_view(view, str(top), str(root))
    result = subprocess.run([top / "bin" / "foo"], capture_output=True, text=True, check=True)
    assert result.stdout == "v3\n"


def test_symlink_view_has_the_levels_view_and_loader_links(tmp_path: Path) -> None:
    """The mounted view's ``levels_view`` and ``loader_links``, planned as symlinks: a link to
    the loader leads into DIR, and under ``.hwcaps/<level>/`` into the levels view of the view
    DIR is in."""
    root = tmp_path / "store"
    _script(root / "foo", "baseline")
    _script(root / "glibc-hwcaps" / "x86-64-v3" / "foo", "v3")
    _script(root / "hwcaps-loader", "loader")
    (root / "bar").symlink_to("hwcaps-loader")
    store = scan(str(root), X86_64)
    target = Target(X86_64, ("x86-64-v3", "x86-64-v2"), None, require_trusted=False)
    options = MountOptions(allow_other=False, levels_view=True, loader_links="/views/hw/bin")
    applied = apply_view_options(store, target, resolve_store(store, target).values(),
                                 options, "/views/hw")

    view = plan_symlink_view(applied.dirs, applied.resolutions)

    levels = (".hwcaps/baseline", ".hwcaps/x86-64-v2", ".hwcaps/x86-64-v3")
    assert [path for path, _ in view.dirs] == [".hwcaps", *levels]
    assert view.links == (
        (".hwcaps/baseline/foo", "foo"), (".hwcaps/baseline/hwcaps-loader", "hwcaps-loader"),
        (".hwcaps/x86-64-v2/foo", "foo"), (".hwcaps/x86-64-v2/hwcaps-loader", "hwcaps-loader"),
        (".hwcaps/x86-64-v3/foo", "glibc-hwcaps/x86-64-v3/foo"),
        (".hwcaps/x86-64-v3/hwcaps-loader", "hwcaps-loader"),
        ("foo", "glibc-hwcaps/x86-64-v3/foo"), ("hwcaps-loader", "hwcaps-loader"))
    assert view.verbatim == (*((f"{level}/bar", f"/views/hw/{level}/bin/bar")
                               for level in levels), ("bar", "/views/hw/bin/bar"))
    assert applied.warnings == ()
    alone = apply_view_options(store, target, (), options, None, ())
    assert alone.warnings == ("loader_links /views/hw/bin is in no hwcaps-fs view: the links "
                              "to hwcaps-loader under .hwcaps/ run the loader, which picks by "
                              "CPUID, not by level",)


def test_symlink_view_directories_are_never_freer_than_the_stores(area: Path) -> None:
    """Each directory gets the mode the FUSE view shows (the store's, less what the
    directories above deny), less group's and others' write, whatever the umask; it is its
    maker's alone until it is filled, and what removes the view can empty it."""
    root = area / "store"
    modes = {"": 0o755, "bin": 0o775, "libexec": 0o755, "libexec/private": 0o700,
             "opt": 0o711, "opt/pub": 0o755, "secret": 0o750, "secret/sub": 0o1777,
             "sealed": 0o555, "sealed/in": 0o555}
    for relpath in modes:
        _script(root / relpath / "tool", relpath or "top")
    for relpath, mode in sorted(modes.items(), reverse=True):
        (root / relpath).chmod(mode)
    store = scan(str(root), X86_64)
    target = Target(X86_64, (), None, require_trusted=False)

    view = plan_symlink_view(store.dirs, resolve_store(store, target).values())

    assert view.top_mode == 0o755
    assert view.dirs == (("bin", 0o755), ("libexec", 0o755), ("libexec/private", 0o700),
                         ("opt", 0o711), ("opt/pub", 0o755), ("sealed", 0o555),
                         ("sealed/in", 0o555), ("secret", 0o750), ("secret/sub", 0o750))
    top = area / "view"
    top.mkdir()
    old_umask = os.umask(0o077)
    try:
        write_symlink_view(view, str(top), str(root))
    finally:
        os.umask(old_umask)
    assert [(path, (top / path).stat().st_mode & 0o7777) for path, _ in view.dirs] == \
        list(view.dirs)
    assert (top / "sealed" / "in" / "tool").readlink() == root / "sealed" / "in" / "tool"
    remove_symlink_view(str(top))
    assert list(top.iterdir()) == []


# -- real runs ---------------------------------------------------------------------------


@mount
def test_fuse_view_serves_best_variant_then_disappears(area: Path, store: Path,
                                                       level: str) -> None:
    view = area / "view"
    result = execute(hwcaps_fs_run(store, view, "sh", "-c",
                                   f'"{view}/bin/prog"; findmnt -n -o FSTYPE "{view}"'))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [level, "fuse.hwcaps-fs"]
    assert result.stderr == ""
    assert_nothing_left(area)
    assert not view.exists(), "the mountpoint run created was left behind"


@mount
def test_command_is_looked_up_through_the_view(area: Path, store: Path, level: str) -> None:
    view = area / "view"
    view.mkdir()
    result = execute(hwcaps_fs_run(store, view, "prog"),
                     env={"PATH": f"{view}/bin:{os.environ['PATH']}"})
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{level}\n", "")
    assert view.is_dir(), "a mountpoint the user made must stay"
    assert_nothing_left(area)


@mount
def test_default_mountpoint_is_private_and_removed(area: Path, store: Path, level: str) -> None:
    result = execute(hwcaps_fs_run(store, None, "sh", "-c",
                                   'echo "$HWCAPS_FS_VIEW"; "$HWCAPS_FS_VIEW/bin/prog"'))
    assert result.returncode == 0, result.stderr
    view, served = result.stdout.split()
    assert served == level
    assert os.path.basename(view).startswith("hwcaps-fs-run.")
    assert not os.path.exists(view)
    assert_nothing_left(area)


@mount
def test_without_fuse_a_symlink_view_is_served(area: Path, store: Path, level: str) -> None:
    skip_without("unshare")
    view = area / "view"
    result = execute(["unshare", "--mount", "sh", "-c", WITHOUT_FUSE, "sh",
                      *hwcaps_fs_run(store, view, "sh", "-c",
                                     f'"{view}/bin/prog"; readlink "{view}/bin/prog"')])
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        fallback_line(store, view, "/dev/fuse is not the FUSE device")]
    assert result.stdout.split() == [level, str(served_path(store, level))]
    assert_nothing_left(area)


@mount
def test_without_fuse_in_place_links_through_a_private_bind(area: Path, store: Path,
                                                            level: str) -> None:
    skip_without("unshare")
    before = sorted(str(path) for path in store.rglob("*"))
    result = execute(["unshare", "--mount", "sh", "-c", WITHOUT_FUSE, "sh",
                      *hwcaps_fs_run(store, store, "sh", "-c",
                                     f'"{store}/bin/prog"; readlink "{store}/bin/prog"; '
                                     f'ls "{store}"')])
    assert result.returncode == 0, result.stderr
    served, link, *listing = result.stdout.split()
    assert served == level
    assert listing == ["bin"], "the view hides glibc-hwcaps/"
    relative = served_path(store, level).relative_to(store)
    assert link.endswith(f"/{relative}") and not link.startswith(f"{store}/")
    assert sorted(str(path) for path in store.rglob("*")) == before
    assert_nothing_left(area)


@mount
def test_without_fuse_the_symlink_view_has_the_levels_view(area: Path, store: Path,
                                                          level: str) -> None:
    skip_without("unshare")
    view = area / "view"
    script = f'cd "{view}/.hwcaps" && for level in *; do echo "$level" "$("$level/bin/prog")"; done'
    result = execute(["unshare", "--mount", "sh", "-c", WITHOUT_FUSE, "sh",
                      *hwcaps_fs_run(store, view, "sh", "-c", script, given=["-o", "levels_view"])])
    assert result.returncode == 0, result.stderr
    levels = [X86_64.baseline.name, *X86_64.level_names[:X86_64.rank(level)]]
    assert result.stdout.splitlines() == [f"{name} {name}" for name in levels]
    assert result.stderr.splitlines() == [
        fallback_line(store, view, "/dev/fuse is not the FUSE device")]
    assert_nothing_left(area)


@mount
def test_without_fuse_loader_links_lead_into_dir(area: Path, binaries: Path,
                                                 level: str) -> None:
    """A system packaged for hwcaps-loader in a container without FUSE: a symlink view of
    usr/hwcaps, then one of usr/bin in place whose links to the loader lead into it. A
    symlink view is no hwcaps-fs view: the links under .hwcaps/<level>/ stay the loader's."""
    skip_without("unshare")
    usr = solus_system(binaries, area / "usr")
    hw = area / "hw"
    built = min(level, "x86-64-v3", key=X86_64.rank)
    expected = "x86-64-v1" if X86_64.rank(built) == 0 else built
    script = (f'readlink "{usr}/bin/foo"; "{usr}/bin/foo"; "{usr}/bin/bar"; '
              f'"{usr}/bin/.hwcaps/{level}/foo"')
    inner = hwcaps_fs_run(usr / "bin", usr / "bin", "sh", "-c", script,
                          given=["-o", f"loader_links={hw}/bin,levels_view"])
    outer = hwcaps_fs_run(usr / "hwcaps", hw, *inner, given=["--layout", "loader"])
    result = execute(["unshare", "--mount", "sh", "-c", WITHOUT_FUSE, "sh", *outer])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{hw}/bin/foo", expected, expected,
                                          "hwcaps-loader ran"]
    assert result.stderr.splitlines() == [
        fallback_line(usr / "hwcaps", hw, "/dev/fuse is not the FUSE device"),
        f"hwcaps-fs: warning: loader_links {hw}/bin is in no hwcaps-fs view: the links to "
        "hwcaps-loader under .hwcaps/ run the loader, which picks by CPUID, not by level",
        fallback_line(usr / "bin", usr / "bin", "/dev/fuse is not the FUSE device")]
    assert_nothing_left(area)


@mount
def test_without_fuse_loader_links_into_a_directory_a_user_can_change_is_refused(
        area: Path, binaries: Path) -> None:
    """As for a mount: root would run whatever a user put there."""
    skip_without("unshare")
    usr = solus_system(binaries, area / "usr")
    shared = area / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    result = execute(["unshare", "--mount", "sh", "-c", WITHOUT_FUSE, "sh",
                      *hwcaps_fs_run(usr / "bin", area / "view", "true",
                                     given=["-o", f"loader_links={shared}"])])
    assert_one_line_error(result, 3)
    assert result.stderr.startswith(f"hwcaps-fs: loader_links {shared}: ")
    assert result.stderr.endswith("and root would run what they put there\n")
    assert_nothing_left(area)


@mount
def test_without_fuse_noexec_is_refused(area: Path, store: Path) -> None:
    """The FUSE view honours ``noexec``; a symlink view cannot (an exec follows the link to
    ROOT's own mount), so without FUSE run refuses it, as a bad option, and CMD never runs."""
    skip_without("unshare")
    view = area / "view"
    script = f'"{view}/bin/prog" || echo refused'
    with_fuse = execute(hwcaps_fs_run(store, view, "sh", "-c", script, given=["-o", "noexec"]))
    assert (with_fuse.returncode, with_fuse.stdout) == (0, "refused\n"), with_fuse.stderr
    result = execute(["unshare", "--mount", "sh", "-c", WITHOUT_FUSE, "sh",
                      *hwcaps_fs_run(store, view, "sh", "-c", script,
                                     given=["-o", "debug", "-o", "noexec"])])
    assert_one_line_error(result, 2)
    assert result.stderr == ("hwcaps-fs: run: -o noexec cannot be honoured without FUSE "
                             "(/dev/fuse is not the FUSE device): a symlink cannot make anything "
                             "non-executable (an exec follows it to ROOT's own mount)\n")
    assert result.stdout == ""
    assert not view.exists()
    assert_nothing_left(area)


@mount
def test_without_fuse_options_no_daemon_answers_are_accepted(area: Path, store: Path,
                                                             level: str) -> None:
    """What only a daemon or libfuse does means nothing to a symlink view: accepted, and
    ``exec`` after ``noexec`` leaves nothing to refuse."""
    skip_without("unshare")
    view = area / "view"
    given = ["-o", "noexec,exec,debug,auto_unmount,fsname=app,subtype=hwcaps-fs.app",
             "-o", "xattr=off,fastpath=off,presentation=files,ro,nosuid,nodev"]
    result = execute(["unshare", "--mount", "sh", "-c", WITHOUT_FUSE, "sh",
                      *hwcaps_fs_run(store, view, f"{view}/bin/prog", given=given)])
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        fallback_line(store, view, "/dev/fuse is not the FUSE device")]
    assert result.stdout == f"{level}\n"
    assert_nothing_left(area)


@mount
def test_without_fuse_a_dir_a_user_can_change_is_refused(area: Path, store: Path) -> None:
    """As for a mount (the first run, with FUSE), MOUNTPOINT must be a place only root can
    change when root may run what the view serves: without a namespace the links would sit in
    the user's directory, for them to repoint under root's feet; with one, a user who can
    write on the way could swap the directory itself."""
    skip_without("unshare")
    shared = area / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    argv = hwcaps_fs_run(store, shared, "echo", "ran")
    for result in (execute(argv),
                   execute(["unshare", "--mount", "sh", "-c", WITHOUT_FUSE, "sh", *argv]),
                   confined(*argv)):
        assert_one_line_error(result, 3)
        assert result.stderr == (f"hwcaps-fs: MOUNTPOINT {shared}: {shared} is writable by "
                                 "group or others, and once the view is gone root would find "
                                 "what they put there (mount it where only root can write)\n")
        assert (result.stdout, list(shared.iterdir())) == ("", [])
    assert_nothing_left(area)


#: Directories of :func:`private_store`, and what :func:`probe_as` says of each: its mode in
#: the view, and whether the user lists it through the view and directly.
PROBED = {".": "755 listed listed", "bin": "755 listed listed",
          "libexec/private": "700 refused refused", "opt/pub": "700 refused refused"}


def private_store(store: Path) -> Path:
    """``store`` with a ``0700`` directory, and a ``0755`` one under a ``0700`` one."""
    for relpath in ("libexec/private", "opt/pub"):
        _script(store / relpath / "secret-name", relpath)
        (store / relpath).chmod(0o700 if relpath == "libexec/private" else 0o755)
    (store / "opt").chmod(0o700)
    return store


def probe_as(user: User, store: Path, view: Path, relpaths: Iterable[str]) -> str:
    """Shell lines that print, for each of ``relpaths``, its mode in ``view`` and whether
    ``user`` may list it through ``view`` and directly in ``store``."""
    def listed(path: Path) -> str:
        return (f'$(runuser -u {user.name} -- ls "{path}" >/dev/null 2>&1 && echo listed '
                '|| echo refused)')
    return "; ".join(f'echo {relpath} $(stat -c %a "{view / relpath}") {listed(view / relpath)} '
                     f'{listed(store / relpath)}' for relpath in relpaths)


def probed(relpaths: Iterable[str]) -> list[str]:
    return [f"{relpath} {PROBED[relpath]}" for relpath in relpaths]


@mount
def test_without_fuse_others_list_through_the_view_only_what_they_may_list(
        area: Path, store: Path, level: str, attacker: User) -> None:
    """In a private namespace (CMD dropping to another user, or reaching it through
    /proc/PID/root): a directory the store keeps from a user is kept from them in the view
    too, a 0755 one is theirs to list and run from as before."""
    skip_without("unshare", "runuser")
    private_store(store)
    view = area / "view"
    script = (f'{probe_as(attacker, store, view, PROBED)}; '
              f'runuser -u {attacker.name} -- "{view}/bin/prog"')
    result = execute(["unshare", "--mount", "sh", "-c", WITHOUT_FUSE, "sh",
                      *hwcaps_fs_run(store, view, "sh", "-c", script)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [*probed(PROBED), level]
    assert result.stderr.splitlines() == [
        fallback_line(store, view, "/dev/fuse is not the FUSE device")]
    assert_nothing_left(area)


@mount
def test_without_fuse_a_root_under_a_private_directory_is_private_in_the_view(
        area: Path, attacker: User) -> None:
    """The top of the view (the tmpfs over DIR) is as private as ROOT is reachable."""
    skip_without("unshare", "runuser")
    hidden = area / "hidden"
    _script(hidden / "store" / "bin" / "tool", "tool")
    hidden.chmod(0o700)
    view = area / "view"
    result = execute(["unshare", "--mount", "sh", "-c", WITHOUT_FUSE, "sh",
                      *hwcaps_fs_run(hidden / "store", view, "sh", "-c",
                                     probe_as(attacker, hidden / "store", view, (".",)) +
                                     f'; "{view}/bin/tool"')])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [". 700 refused refused", "tool"]
    assert_nothing_left(area)


@mount
def test_without_fuse_in_place_the_private_bind_is_no_way_around_roots_parents(
        area: Path, attacker: User) -> None:
    """In place, the links lead into a private bind mount of ROOT: a user whom a directory
    above ROOT keeps out is kept out of it too, as out of the view."""
    skip_without("unshare", "runuser")
    store = area / "hidden" / "store"
    _script(store / "bin" / "tool", "tool")
    (area / "hidden").chmod(0o700)
    bind = f'"$(dirname "$(dirname "$(readlink "{store}/bin/tool")")")"'
    script = (f'{probe_as(attacker, store, store, (".",))}; "{store}/bin/tool"; '
              f'runuser -u {attacker.name} -- ls {bind} || echo refused')
    result = execute(["unshare", "--mount", "sh", "-c", WITHOUT_FUSE, "sh",
                      *hwcaps_fs_run(store, store, "sh", "-c", script)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [". 700 refused refused", "tool", "refused"]
    assert_nothing_left(area)


def test_as_nobody_is_unprivileged_from_the_lookup_on(area: Path) -> None:
    """What the tests below run as nobody is looked up as nobody: a program in a directory
    only root may search is not run (setpriv --reuid ran it, looking it up as root)."""
    skip_without("runuser")
    private = area / "private"
    private.mkdir(mode=0o700)
    shutil.copy("/bin/true", private / "true")
    result = execute([*AS_NOBODY, str(private / "true")])
    assert result.returncode != 0 and "Permission denied" in result.stderr, result
    assert execute([*AS_NOBODY, "id", "-u"]).stdout.strip() == "65534"


@mount
def test_as_nobody_with_fuse_in_a_user_namespace(area: Path, store: Path, level: str,
                                                 others_python: OthersPython) -> None:
    skip_without_userns()
    view, dev = area / "view", area / "dev"
    view.mkdir()
    dev.mkdir()
    result = execute(["unshare", "--mount", "sh", "-c", FUSE_NODE_OF_MODE, "sh", str(dev), "666",
                      *AS_NOBODY, *hwcaps_fs_run(store, view, "sh", "-c",
                                              f'id -u; "{view}/bin/prog"; '
                                              f'findmnt -n -o FSTYPE "{view}"',
                                              python=others_python)], others_python.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["65534", level, "fuse.hwcaps-fs"]
    assert_nothing_left(area)


@mount
def test_as_nobody_without_fuse_in_a_user_namespace(area: Path, store: Path, level: str,
                                                    others_python: OthersPython) -> None:
    skip_without_userns()
    view, dev = area / "view", area / "dev"
    view.mkdir()
    dev.mkdir()
    result = execute(["unshare", "--mount", "sh", "-c", FUSE_NODE_OF_MODE, "sh", str(dev), "600",
                      *AS_NOBODY, *hwcaps_fs_run(store, view, "sh", "-c",
                                              f'"{view}/bin/prog"; findmnt -n -o FSTYPE "{view}"',
                                              python=others_python)], others_python.env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        fallback_line(store, view, "/dev/fuse: Permission denied")]
    assert result.stdout.split() == [level, "tmpfs"]
    assert_nothing_left(area)


def confined(*argv: str) -> subprocess.CompletedProcess[str]:
    return execute(confined_argv(*argv))


def confined_argv(*argv: str) -> list[str]:
    """``argv`` run with no namespace to be had (see :data:`CONFINED`), or the test skipped."""
    skip_without("unshare", "setpriv")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"],
                           capture_output=True, text=True, check=False)
    if probe.returncode:
        pytest.skip(f"cannot create a user namespace: {probe.stderr.strip()}")
    # A container typically mounts /proc/sys read-only: user namespaces cannot be forbidden.
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c",
                            "echo 0 > /proc/sys/user/max_user_namespaces"],
                           capture_output=True, text=True, check=False)
    if probe.returncode:
        pytest.skip(f"cannot forbid user namespaces here: {probe.stderr.strip()}")
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", CONFINED, "sh", *argv]


@mount
def test_without_any_namespace_links_go_into_an_empty_dir(area: Path, store: Path,
                                                          level: str) -> None:
    view = area / "view"
    view.mkdir()
    result = confined(*hwcaps_fs_run(store, view, "sh", "-c",
                                     f'"{view}/bin/prog"; readlink "{view}/bin/prog"; '
                                     f'findmnt -n "{view}" || echo not-mounted'))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        fallback_line(store, view, "/dev/fuse is not the FUSE device")]
    assert result.stdout.split() == [level, str(served_path(store, level)), "not-mounted"]
    assert list(view.iterdir()) == [], "the symlinks must be removed after CMD"
    assert_nothing_left(area)


def while_running(argv: list[str], probe: str) -> tuple[str, str]:
    """``probe``'s output, run on the host while ``argv``, whose CMD waits, runs; then what
    ``argv`` printed."""
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENVIRONMENT, cwd="/")
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        seen = subprocess.run(["sh", "-c", probe], capture_output=True, text=True,
                              timeout=DEADLINE, check=False).stdout if ready else ""
        stdout, stderr = process.communicate("\n", timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=DEADLINE)
    assert (ready, process.returncode) == ("ready\n", 0), stderr
    return seen, stdout


@mount
def test_without_any_namespace_others_list_in_dir_only_what_they_may_list(
        area: Path, store: Path, level: str, attacker: User) -> None:
    """Written straight into DIR on the host, the view is every local user's to look at: a
    directory the store keeps from one is kept from them in DIR too, a 0755 one is theirs to
    list and run from as before; DIR, made private while ROOT is, gets its mode back."""
    skip_without("runuser")
    private_store(store)
    hidden = area / "hidden"
    _script(hidden / "store" / "bin" / "tool", "tool")
    hidden.chmod(0o700)
    view = area / "view"
    view.mkdir(mode=0o755)
    view.chmod(0o755)
    wait = ("sh", "-c", "echo ready; read _; echo done")
    seen, stdout = while_running(
        confined_argv(*hwcaps_fs_run(store, view, *wait)),
        f'{probe_as(attacker, store, view, PROBED)}; '
        f'runuser -u {attacker.name} -- "{view}/bin/prog"')
    assert seen.splitlines() == [*probed(PROBED), level]
    assert stdout == "done\n"
    seen, _ = while_running(confined_argv(*hwcaps_fs_run(hidden / "store", view, *wait)),
                            probe_as(attacker, hidden / "store", view, (".",)))
    assert seen.splitlines() == [". 700 refused refused"]
    assert (list(view.iterdir()), view.stat().st_mode & 0o7777) == ([], 0o755)
    assert_nothing_left(area)


@mount
def test_without_any_namespace_a_busy_dir_is_refused(area: Path, store: Path) -> None:
    view = area / "view"
    view.mkdir()
    (view / "mine").write_text("not hwcaps-fs's\n")
    result = confined(*hwcaps_fs_run(store, view, "true"))
    assert result.returncode == 4
    assert result.stderr == (f"hwcaps-fs: cannot serve a symlink view in {view}: it is not "
                             "empty, and no tmpfs can be mounted over it here\n")
    assert [path.name for path in view.iterdir()] == ["mine"]
    assert_nothing_left(area)


@mount
def test_command_keeps_pid_1_in_a_pid_namespace(area: Path, store: Path, level: str) -> None:
    skip_without("unshare")
    view = area / "view"
    result = execute(["unshare", "--pid", "--fork", "--mount-proc",
                      *hwcaps_fs_run(store, view, "sh", "-c", f'echo $$; "{view}/bin/prog"')])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", level]
    assert_nothing_left(area)


@mount
def test_exit_status_is_the_commands(area: Path, store: Path) -> None:
    result = execute(hwcaps_fs_run(store, area / "view", "sh", "-c", "exit 42"))
    assert result.returncode == 42
    assert_nothing_left(area)


@mount
def test_command_gets_default_signal_dispositions(area: Path, store: Path) -> None:
    """Python ignores SIGPIPE, and an ignored signal stays ignored across exec: ``yes`` would
    complain about a broken pipe instead of dying quietly."""
    result = execute(hwcaps_fs_run(store, area / "view", "sh", "-c", "yes | head -n 1"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "y\n", "")
    assert_nothing_left(area)


@mount
def test_sigterm_reaches_the_command(area: Path, store: Path) -> None:
    script = 'trap "echo trapped; exit 7" TERM; echo ready; while :; do sleep 0.05; done'
    process = subprocess.Popen(hwcaps_fs_run(store, area / "view", "sh", "-c", script),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=ENVIRONMENT, cwd="/")
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        assert Path(f"/proc/{process.pid}/comm").read_text() == "sh\n", "CMD must replace us"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=DEADLINE)
    assert (process.returncode, stdout) == (7, "trapped\n"), stderr
    assert_nothing_left(area)


@mount
def test_command_not_found_is_one_line_and_127(area: Path, store: Path) -> None:
    result = execute(hwcaps_fs_run(store, area / "view", "hwcaps-fs-no-such-command"))
    assert result.returncode == 127
    assert result.stderr == ("hwcaps-fs: run: command not found: hwcaps-fs-no-such-command "
                             "(looked in PATH and in the view's bin/ and sbin/)\n")
    assert_nothing_left(area)


@mount
def test_a_name_of_the_view_is_found_without_path(area: Path, store: Path, level: str) -> None:
    """The first thing a user tries: ``run --root STORE -- prog``, the view not on PATH."""
    for view in (area / "view", None):
        result = execute(hwcaps_fs_run(store, view, "prog"))
        assert (result.returncode, result.stdout, result.stderr) == (0, f"{level}\n", "")
    assert_nothing_left(area)


@mount
def test_bad_root_is_one_line(area: Path) -> None:
    result = execute(hwcaps_fs_run(area / "missing", area / "view", "true"))
    assert result.returncode == 3
    assert result.stderr == f"hwcaps-fs: ROOT {area / 'missing'}: no such directory\n"
    assert_nothing_left(area)
