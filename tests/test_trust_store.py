"""Trust, store side: what a local user who can write somewhere in or above a store must not
achieve through a view served to root. Each attack is run by a real non-root user
(tests.users) against a real mount, and ``which`` and ``check`` must say what they refused.

* a symlink planted in a variant directory the user can write (the link and the directories it
  sits in count, not only its target's);
* a directory above ROOT the user can write (they could put another store in ROOT's place);
* POSIX ACLs (the view never grants what an ACL on the real path denies);
* ``-o loader_links=DIR`` (the view's links lead root into DIR: DIR, the way to it and the
  symlinks on it must be root's alone, or the mount is refused; and a view served to root
  is mounted only where no user can change what is below it);
* ``-o levels_view`` (every level's view keeps the view's rules);
* ``compare`` run as root (it runs no build a user could change, a link out of ROOT included);
* names with control characters (quoted wherever a name is printed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.builders import PRINT_EUID, compile_c, compile_level, install, variant_store
from tests.mounting import (
    DEADLINE,
    ENVIRONMENT,
    assert_one_line_error,
    cleanup,
    hwcaps_fs,
    mounted,
)
from tests.test_loader_systems import solus_system
from tests.test_run import WITHOUT_FUSE
from tests.users import User

pytestmark = [pytest.mark.mount, pytest.mark.usefixtures("fuse_ok")]


def output(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(map(str, command)), capture_output=True, text=True,
                          timeout=DEADLINE, check=False)


def active_level(level: str) -> str:
    if level == "x86-64":
        pytest.skip("this CPU serves no variant level")
    return level


# -- a symlink in a variant directory the user can write ----------------------------------


@pytest.mark.parametrize("given", ["owned by the user", "sticky 1777"])
def test_a_planted_variant_symlink_is_refused(binaries: Path, public: Path, attacker: User,
                                              level: str, given: str) -> None:
    level = active_level(level)
    store = variant_store(binaries, public / "store", "bin/foo", levels=())
    install(compile_level(binaries, "baseline", text="bar"), store / "bin/bar")
    writable = store / "glibc-hwcaps" / level / "bin"
    writable.mkdir(parents=True)
    if given == "owned by the user":
        attacker.owns(writable)
    else:
        writable.chmod(0o1777)
    attacker.run("ln", "-s", "../../../bin/bar", writable / "foo", check=True)

    mnt = public / "mnt"
    mnt.mkdir()
    with mounted(store, mnt) as mount:
        assert output(mnt / "bin/foo").stdout.strip() == "baseline"
        assert f"glibc-hwcaps/{level}/bin/foo: skipped" in mount.log_text()

    which = hwcaps_fs("which", str(store), "bin/foo")
    assert which.stdout.startswith("bin/foo: baseline -> bin/foo"), which.stdout
    assert f"skipped {level} (glibc-hwcaps/{level}/bin/foo)" in which.stdout
    check = hwcaps_fs("check", str(store))
    assert f"glibc-hwcaps/{level}/bin/foo: " in check.stdout, check.stdout


# -- a directory above ROOT the user can write ---------------------------------------------


def test_a_store_below_a_users_directory_is_not_served_to_root(
        binaries: Path, public: Path, attacker: User) -> None:
    """The user owns ROOT's parent: they can rename the store away and put their own in its
    place, so nothing the view hands out may lead through ROOT's path."""
    home = public / "home"
    home.mkdir()
    attacker.owns(home)
    store = variant_store(binaries, home / "store", "bin/foo")
    suid = install(compile_c(PRINT_EUID, binaries / "euid", []), store / "bin/suid")
    suid.chmod(0o4755)

    mnt = public / "mnt"
    mnt.mkdir()
    for presentation in ("files", "symlinks"):
        with mounted(store, mnt, "-o", f"presentation={presentation}"):
            attacker.run("mv", store, home / "old", check=True)
            attacker.run("mkdir", "-p", store / "bin", check=True)
            for name in ("suid", "foo"):
                fake = store / "bin" / name
                attacker.run("sh", "-c", f"printf '#!/bin/sh\\necho pwned\\n' > '{fake}' && "
                             f"chmod 755 '{fake}'", check=True)
            for name in ("suid", "foo"):
                served = mnt / "bin" / name
                if os.path.lexists(served):
                    assert "pwned" not in output(served).stdout, (presentation, name)
            shutil.rmtree(store)
            (home / "old").rename(store)

    check = hwcaps_fs("check", str(store))
    assert str(home) in check.stdout and "writable" in check.stdout, check.stdout
    which = hwcaps_fs("which", str(store), "bin/suid")
    assert str(home) in which.stdout, which.stdout

    # run's symlink view (no FUSE here) leads through ROOT's path too: it links nothing.
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    view = public / "view"
    links = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", WITHOUT_FUSE, "sh",
         sys.executable, "-m", "hwcaps_fs", "run", "--root", str(store), "--mountpoint",
         str(view), "--", "find", str(view), "-type", "l"],
        capture_output=True, text=True, timeout=DEADLINE, check=False, env=ENVIRONMENT, cwd="/")
    assert links.returncode == 0, links.stderr
    assert "FUSE unavailable" in links.stderr
    assert links.stdout == "", links.stdout


# -- links the view makes: -o loader_links=DIR -------------------------------------------


def pwned_script(user: User, path: Path) -> None:
    """As ``user``: a program at ``path`` that says it ran, and as whom, on its standard
    output and in ``path.ran``."""
    user.run("sh", "-c", f"printf '#!/bin/sh\\nid -u >> \"$0.ran\"\\necho pwned\\n' "
             f"> '{path}' && chmod 755 '{path}'", check=True)


@pytest.mark.parametrize("given", ["DIR is the user's", "DIR's parent is the user's",
                                   "a symlink of the user's on the way"])
def test_loader_links_never_lead_root_where_a_user_can_write(
        binaries: Path, public: Path, attacker: User, given: str) -> None:
    """The in-place view of usr/bin shows each link to hwcaps-loader as a link into DIR, and
    root follows it: if a user can change what DIR/foo is (DIR, a parent of it, a symlink
    on the way), the mount is refused. Were it mounted, the user would make root run their
    program."""
    usr = solus_system(binaries, public / "store" / "usr")
    home = public / "home"
    home.mkdir()
    attacker.owns(home)
    if given == "DIR is the user's":
        directory = home
    elif given == "DIR's parent is the user's":
        directory = home / "view"
        directory.mkdir()
    else:
        # A sticky directory every user may write, as /tmp: the user's link in it is theirs
        # to repoint, though it leads to a root-only directory when the view is mounted.
        sticky, safe = public / "tmp", public / "safe"
        sticky.mkdir()
        sticky.chmod(0o1777)
        safe.mkdir()
        directory = sticky / "view"
        attacker.run("ln", "-s", safe, directory, check=True)

    result = hwcaps_fs("mount", "-o", f"loader_links={directory}", str(usr / "bin"))
    try:
        if result.returncode == 0:
            if given == "DIR's parent is the user's":
                attacker.run("mv", directory, home / "old", check=True)
                attacker.run("mkdir", directory, check=True)
            elif given == "a symlink of the user's on the way":
                attacker.run("ln", "-sfn", home, directory, check=True)
            pwned_script(attacker, directory / "foo")
            assert output(usr / "bin/foo").stdout.strip() == "hwcaps-loader ran"
    finally:
        cleanup(usr / "bin")
    assert_one_line_error(result, 3)
    assert f"loader_links {directory}: " in result.stderr
    assert list(public.rglob("*.ran")) == []


def test_a_view_served_to_root_is_not_mounted_where_a_user_can_write(
        binaries: Path, public: Path, attacker: User) -> None:
    """DIR is a view mounted on a directory of the user's (in a sticky directory, as /tmp):
    while mounted it looks like root's, but once the view is gone (unmounted, its daemon
    ended) the links lead root into the user's directory. The view is refused there."""
    usr = solus_system(binaries, public / "store" / "usr")
    sticky = public / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    view = sticky / "view"
    attacker.run("mkdir", view, check=True)

    result = hwcaps_fs("mount", "--layout", "loader", str(usr / "hwcaps"), str(view))
    try:
        if result.returncode == 0:
            links = hwcaps_fs("mount", "-o", f"loader_links={view}/bin", str(usr / "bin"))
            assert links.returncode == 0, links.stderr
            assert hwcaps_fs("umount", str(view)).returncode == 0
            attacker.run("mkdir", view / "bin", check=True)
            pwned_script(attacker, view / "bin/foo")
            assert output(usr / "bin/foo").stdout.strip() != "pwned"
    finally:
        cleanup(usr / "bin")
        cleanup(view)
    assert_one_line_error(result, 3)
    assert f"MOUNTPOINT {view}: {view} is owned by uid {attacker.uid}" in result.stderr
    assert list(public.rglob("*.ran")) == []


# -- every level's view: -o levels_view ----------------------------------------------------


def test_the_levels_view_keeps_every_rule_of_the_view(
        binaries: Path, public: Path, attacker: User, level: str) -> None:
    """``.hwcaps/<level>/`` shows the store's candidates again, each capped at a level: the
    trust rule, the directories' permissions and ACLs hold there as in the view itself."""
    level = active_level(level)
    if shutil.which("setfacl") is None:
        pytest.skip("setfacl (acl) is not installed")
    store = variant_store(binaries, public / "store", "bin/foo", levels=())
    for name in ("acl", "hid"):
        install(compile_level(binaries, "baseline"), store / "bin" / name)
    variant = store / "glibc-hwcaps" / level / "bin"
    install(compile_level(binaries, level), variant / "hid")
    attacker.owns(install(compile_level(binaries, level), variant / "foo"))
    (store / "glibc-hwcaps" / level).chmod(0o700)
    subprocess.run(["setfacl", "-m", f"u:{attacker.name}:---", str(store / "bin/acl")],
                   check=True)

    mnt = public / "mnt"
    mnt.mkdir()
    with mounted(store, mnt, "-o", "levels_view") as mount:
        shown = mnt / ".hwcaps" / level / "bin"
        assert output(shown / "foo").stdout.strip() == "baseline"  # the user's build: refused
        assert output(shown / "hid").stdout.strip() == level
        assert attacker.run(shown / "hid").returncode != 0  # below a 0700 directory
        for each in ("baseline", level):
            assert attacker.run(mnt / ".hwcaps" / each / "bin/acl").returncode != 0
        assert attacker.run(mnt / ".hwcaps/baseline/bin/hid").stdout.strip() == "baseline"
        assert f"glibc-hwcaps/{level}/bin/foo: skipped" in mount.log_text()


# -- compare, run as root ------------------------------------------------------------------


def test_compare_as_root_runs_no_build_a_user_could_change(
        binaries: Path, public: Path, attacker: User, level: str) -> None:
    """docs/packagers.md: compare as root refuses what the view would refuse when serving
    root, and a baseline symlink out of ROOT (which the view shows as it is, for the kernel
    to follow with the caller's rights) is run by compare itself: it must lead nowhere a user
    can change."""
    level = active_level(level)
    store = variant_store(binaries, public / "store", "bin/foo", levels=())
    home = public / "home"
    home.mkdir()
    attacker.owns(home)
    pwned_script(attacker, home / "bar")
    (store / "bin/bar").symlink_to(home / "bar")
    variant = store / "glibc-hwcaps" / level / "bin"
    variant.mkdir(parents=True)
    attacker.owns(variant)
    pwned_script(attacker, variant / "foo")

    quick = ("--budget", "1", "--min-rounds", "1", "--max-rounds", "2")
    linked = hwcaps_fs("compare", *quick, str(store), "bin/bar")
    assert linked.returncode == 3, linked
    assert f"directory {home} is writable by a non-root user" in linked.stderr
    variants = hwcaps_fs("compare", *quick, str(store), "bin/foo")
    assert variants.returncode == 0, variants
    assert f"not measured: {level} (glibc-hwcaps/{level}/bin/foo): owned by uid" in \
        variants.stdout
    assert list(public.rglob("*.ran")) == []


# -- POSIX ACLs --------------------------------------------------------------------------


def test_an_acl_that_denies_a_user_denies_them_through_the_view(
        binaries: Path, public: Path, attacker: User, level: str) -> None:
    if shutil.which("setfacl") is None:
        pytest.skip("setfacl (acl) is not installed")
    store = variant_store(binaries, public / "store", "bin/foo")
    install(compile_level(binaries, "baseline", text="secret"), store / "bin/secret")
    install(compile_level(binaries, "baseline", text="tool"), store / "private/tool")
    deny = f"u:{attacker.name}:---"
    subprocess.run(["setfacl", "-m", deny, str(store / "bin/secret")], check=True)
    subprocess.run(["setfacl", "-m", deny, str(store / "private")], check=True)
    served = store / "glibc-hwcaps" / level if level != "x86-64" else store
    subprocess.run(["setfacl", "-m", deny, str(served)], check=True)

    for path in (store / "bin/secret", store / "private/tool"):
        assert attacker.run("cat", path).returncode != 0, path
    mnt = public / "mnt"
    mnt.mkdir()
    with mounted(store, mnt):
        for name in ("bin/secret", "private/tool", "bin/foo"):
            assert attacker.run("cat", mnt / name).returncode != 0, name
            assert attacker.run(mnt / name).returncode != 0, name
            assert output(mnt / name).returncode == 0, name

    check = hwcaps_fs("check", str(store))
    assert "bin/secret" in check.stdout and "ACL" in check.stdout, check.stdout


# -- names are data ----------------------------------------------------------------------


FORGED = "hwcaps-fs[1]: warning: forged"
ESCAPE = "\x1b]0;owned\x07\x1b[2J"


def test_names_with_control_characters_are_quoted(binaries: Path, public: Path,
                                                  attacker: User, level: str) -> None:
    """A user who may name a file in a store can neither forge a line of the logs, ``which``
    or ``check`` nor send escape sequences to the terminal that shows them."""
    level = active_level(level)
    store = variant_store(binaries, public / "store", "bin/foo", levels=())
    writable = store / "glibc-hwcaps" / level / "bin"
    writable.mkdir(parents=True)
    attacker.owns(writable)
    name = f"evil\n{FORGED}{ESCAPE}"
    attacker.run("cp", store / "bin/foo", writable / name, check=True)

    def assert_quoted(text: str, what: str) -> None:
        assert "\x1b" not in text and "\x07" not in text, (what, text)
        assert not any(line.startswith(FORGED) for line in text.splitlines()), (what, text)
        assert "evil" in text, (what, text)

    mnt = public / "mnt"
    mnt.mkdir()
    with mounted(store, mnt) as mount:
        assert os.listdir(mnt / "bin") == ["foo"]
    assert_quoted(mount.log_text(), "the daemon's log")
    assert_quoted(hwcaps_fs("which", str(store), f"bin/{name}").stdout, "which")
    assert_quoted(hwcaps_fs("check", str(store)).stdout, "check")
