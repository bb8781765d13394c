"""Every level's view at once (``-o levels_view``): ``.hwcaps/<level>/`` serves what a CPU at
that level would be served, through a real mount, and only on request."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hwcaps_fs.core.level_views import LEVELS_DIR, level_paths, level_views, store_name
from hwcaps_fs.core.levels import X86_64
from hwcaps_fs.store.scan import scan
from tests.builders import compile_level, install, variant_store
from tests.mounting import mounted, wait_until
from tests.test_resolve import target


def run(path: Path) -> str:
    return subprocess.run([str(path)], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


def below(level: str) -> list[str]:
    """The baseline and every level up to ``level``, lowest first."""
    return ["baseline", *X86_64.level_names[: X86_64.rank(level)]]


def test_level_views_resolve_each_level_capped(tmp_path: Path, binaries: Path) -> None:
    variant_store(binaries, tmp_path, "bin/prog", levels=("x86-64-v2", "x86-64-v4"))
    install(compile_level(binaries, "x86-64-v3"), tmp_path / "glibc-hwcaps/x86-64-v3/bin/only")
    views = level_views(scan(str(tmp_path), X86_64), target("x86-64-v3"))
    assert views.warning is None
    assert sorted(views.dirs) == [".hwcaps", *sorted(
        f".hwcaps/{level}{suffix}" for level in below("x86-64-v3") for suffix in ("", "/bin"))]
    served = {r.relpath: r.served.level if r.served else "none" for r in views.resolutions}
    assert served == {
        ".hwcaps/baseline/bin/prog": None, ".hwcaps/baseline/bin/only": "none",
        ".hwcaps/x86-64-v2/bin/prog": "x86-64-v2", ".hwcaps/x86-64-v2/bin/only": "none",
        ".hwcaps/x86-64-v3/bin/prog": "x86-64-v2", ".hwcaps/x86-64-v3/bin/only": "x86-64-v3",
    }


def test_level_paths_are_the_names_of_the_level_views_and_store_name_undoes_them() -> None:
    paths = level_paths(target("x86-64-v3"), ["bin/prog", "bin/sub/tool"])
    assert paths == {f".hwcaps/{level}/{name}" for level in below("x86-64-v3")
                     for name in ("bin/prog", "bin/sub/tool")}
    assert {store_name(path) for path in paths} == {"bin/prog", "bin/sub/tool"}
    assert store_name("bin/prog") == "bin/prog"


def test_a_store_with_its_own_hwcaps_entry_keeps_it(tmp_path: Path, binaries: Path) -> None:
    variant_store(binaries, tmp_path, "bin/prog", levels=())
    (tmp_path / LEVELS_DIR).mkdir()
    views = level_views(scan(str(tmp_path), X86_64), target("x86-64-v2"))
    assert (views.dirs, views.resolutions) == ({}, ())
    assert views.warning is not None and "exists in the store" in views.warning


@pytest.mark.usefixtures("fuse_ok")
def test_every_level_through_a_real_mount(binaries: Path, tmp_path: Path, level: str) -> None:
    store = variant_store(binaries, tmp_path / "store", "bin/prog")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(store, mnt):
        assert os.listdir(mnt) == ["bin"]  # off by default: /usr/bin stays as it is
        assert not (mnt / LEVELS_DIR).exists()
    with mounted(store, mnt, "-o", "levels_view"):
        assert sorted(os.listdir(mnt)) == [LEVELS_DIR, "bin"]
        assert sorted(os.listdir(mnt / LEVELS_DIR)) == sorted(below(level))
        assert run(mnt / "bin/prog") == level
        for each in below(level):
            prog = mnt / LEVELS_DIR / each / "bin/prog"
            assert run(prog) == each
            assert os.getxattr(prog, "user.hwcaps.level") == each.encode()
        # Levels above this CPU get no directory: their builds would not run here.
        for above in X86_64.level_names[X86_64.rank(level):]:
            assert not (mnt / LEVELS_DIR / above).exists()
        # Updates reach every level's view: without its v2 build, v2 machines get the baseline.
        if level != "baseline":
            (store / "glibc-hwcaps/x86-64-v2/bin/prog").unlink()
            v2 = mnt / LEVELS_DIR / "x86-64-v2/bin/prog"
            wait_until(lambda: run(v2) == "baseline", 10, "the v2 view to fall back")
        # A directory that appears or leaves appears or leaves in every level's view.
        install(compile_level(binaries, "baseline", text="new"), store / "sbin/new")
        names = [mnt / "sbin/new", *(mnt / LEVELS_DIR / each / "sbin/new" for each in below(level))]
        wait_until(lambda: all(name.exists() for name in names), 10, "sbin in every view")
        assert [run(name) for name in names] == ["new"] * len(names)
        shutil.rmtree(store / "sbin")
        wait_until(lambda: not any(name.parent.exists() for name in names), 10, "sbin gone")
        # A .hwcaps of the store's own takes the levels view's place.
        (store / LEVELS_DIR).mkdir()
        wait_until(lambda: os.listdir(mnt / LEVELS_DIR) == [], 10, "the store's own .hwcaps")
