"""Random stores and random changes to them, served by a real mount, against a reference model.

Each example builds a glibc-layout store out of real gcc programs (``-mneeded`` marked, each
printing a label that says which tree and which generation it is), mounts it, then changes the
store the way package managers and admins do while it is mounted: rename a new build over an
old one, rewrite one in place, add, move or remove a variant or the baseline, chmod, make a
variant a symlink into a pool of files inside ROOT, remove a directory or a whole level (or
all of ``glibc-hwcaps``), move a prepared directory in, move one to another level. A step is
one to three such changes back to back. After each step the mount must come to agree with
the model within a few seconds, and then every name is listed, labelled
(``user.hwcaps.level``), moded, read and executed exactly as the model says; names the model
says are absent must not be found by a lookup either. Right after a single atomic change, a
name runnable both before and after must run one of the two builds: never a failed exec, never
a third build.

The model restates glibc's rule (as ``tests/test_resolve_model.py`` does, here for files
described by how they were built rather than by their bytes): the active levels from the
highest, the first variant that is executable, built for a level this CPU runs and trusted
(not group/other-writable, everything here being root's), else the baseline if trusted. A
symlink variant is judged by the file it ends at, inside the store (pool files never change:
links whose targets change are the single-case tests at the end).
The CPU's levels come from :func:`hwcaps_fs.detect.cpu.detect`, never assumed.

Programs are compiled once per ``-march`` with a placeholder string, and each build is that
binary with its label patched over the placeholder: real ELF files with real ISA notes, at
the cost of a byte copy per build.

``HWCAPS_FS_FUZZ_EXAMPLES`` raises the number of examples for a longer hunt.
"""

from __future__ import annotations

import itertools
import os
import posixpath
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hwcaps_fs.core.levels import X86_64
from hwcaps_fs.detect.cpu import DetectOptions, detect
from tests.builders import compile_level
from tests.mounting import mounted, wait_until

pytestmark = [pytest.mark.mount, pytest.mark.slow, pytest.mark.usefixtures("fuse_ok")]

#: Seconds for the mount to agree with the model after a change (the watcher needs well
#: under one; the machine is shared).
CONVERGE = 5.0

#: Seconds an exec through the mount may take.
EXEC_TIMEOUT = 10.0

EXAMPLES = int(os.environ.get("HWCAPS_FS_FUZZ_EXAMPLES", "15"))

#: The trees of the store: None is the baseline, then the levels (glibc-hwcaps/<level>).
TREES: tuple[str | None, ...] = (None, *X86_64.level_names)
LEVELS = X86_64.level_names
NAMES = ("bin/a", "bin/b", "sbin/c")
DIRS = tuple(sorted({posixpath.dirname(name) for name in NAMES}))

#: What a build can be: a gcc -march level (keys of tests.builders.MARCH) or a shell script.
BASELINE = "baseline"
SCRIPT = "script"
MARCHES = (BASELINE, *LEVELS)

#: The string compiled into every program, overwritten with each build's label.
PLACEHOLDER = "HWCAPS-FS-FUZZ-LABEL".ljust(48, "-")

#: Where symlink variants point: a directory of ROOT outside every tree.
POOL = "glibc-hwcaps/pool"

Key = tuple[str | None, str]


class Mode(int):
    """A file mode that shows itself in octal in falsifying examples."""

    def __repr__(self) -> str:
        return f"0o{self:o}"


MODES = (Mode(0o755), Mode(0o644), Mode(0o775))


def short(tree: str | None) -> str:
    return BASELINE if tree is None else tree.removeprefix("x86-64-")


def tree_dir(root: Path, tree: str | None) -> Path:
    return root if tree is None else root / "glibc-hwcaps" / tree


def key_path(root: Path, key: Key) -> Path:
    return tree_dir(root, key[0]) / key[1]


# -- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class File:
    """A regular file: the build it holds (``label`` is what it prints), and its mode."""

    march: str
    label: str
    mode: Mode


@dataclass(frozen=True)
class Link:
    """A symlink to a file of the pool (None: to a pool name that does not exist)."""

    to: File | None


@dataclass
class Model:
    """What the store holds: its entries and its directories ((tree, "") is a tree's top)."""

    entries: dict[Key, File | Link] = field(default_factory=dict)
    dirs: set[tuple[str | None, str]] = field(default_factory=lambda: {(None, "")})

    def add_dirs(self, key: Key) -> None:
        self.dirs |= {(key[0], ""), (key[0], posixpath.dirname(key[1]))}

    def drop(self, tree: str | None, under: str) -> None:
        """Forget ``under`` ("" = the whole tree) of ``tree`` and everything in it."""
        self.entries = {key: entry for key, entry in self.entries.items()
                        if not (key[0] == tree and _inside(key[1], under))}
        self.dirs = {d for d in self.dirs if not (d[0] == tree and _inside(d[1], under))}

    def followed(self, key: Key) -> File | None:
        """The regular file ``key`` ends at, following a link; None if absent or dangling."""
        entry = self.entries.get(key)
        return entry.to if isinstance(entry, Link) else entry


def _inside(path: str, under: str) -> bool:
    return not under or path == under or path.startswith(under + "/")


@dataclass(frozen=True)
class Served:
    """What the model says a name serves: the tree (``user.hwcaps.level``) and the file."""

    level: str
    file: File

    @property
    def executable(self) -> bool:
        return bool(self.file.mode & 0o111)


def trusted(file: File) -> bool:
    return not file.mode & 0o022


def served(model: Model, name: str, active: tuple[str, ...]) -> Served | None:
    """glibc's search as plainly as possible: the first usable variant at an active level,
    highest first, else the baseline as it is (only trust applies to it)."""
    runs_here = {BASELINE, SCRIPT, *active}
    for tree in active:
        file = model.followed((tree, name))
        if (file is not None and file.mode & 0o111 and file.march in runs_here
                and trusted(file)):
            return Served(tree, file)
    baseline = model.entries.get((None, name))
    if isinstance(baseline, File) and trusted(baseline):
        return Served(BASELINE, baseline)
    return None


# -- builds -----------------------------------------------------------------------------------


class Builds:
    """Real programs for each -march, compiled once; a build is a copy with its label."""

    def __init__(self, binaries: Path) -> None:
        self.templates = {march: compile_level(binaries, march, text=PLACEHOLDER,
                                               mark="mneeded").read_bytes()
                          for march in MARCHES}
        for march, data in self.templates.items():
            assert data.count(PLACEHOLDER.encode()) == 1, march
        self.labels: dict[bytes, str] = {}

    def content(self, march: str, label: str) -> bytes:
        if march == SCRIPT:
            data = f"#!/bin/sh\necho {label}\n".encode()
        else:
            assert len(label) < len(PLACEHOLDER), label
            patch = label.encode().ljust(len(PLACEHOLDER), b"\0")
            data = self.templates[march].replace(PLACEHOLDER.encode(), patch)
        self.labels[data] = label
        return data

    def label_of(self, data: bytes) -> str:
        return self.labels.get(data, f"<unknown {len(data)} bytes>")


@dataclass
class World:
    """One example's store on disk, its model, and where to make new labels from."""

    root: Path
    staging: Path
    builds: Builds
    model: Model = field(default_factory=Model)
    generation: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def new_file(self, tree: str | None, name: str, march: str, mode: Mode) -> tuple[File, bytes]:
        label = f"{short(tree)}/{name}:{short(march)}#{next(self.generation)}"
        return File(march, label, mode), self.builds.content(march, label)


# -- changes ----------------------------------------------------------------------------------


class Change(Protocol):
    """One change to the store, made on disk and in the model alike."""

    @property
    def atomic(self) -> bool:
        """One step on disk: a name runnable before and after must run one of the two."""

    def apply(self, world: World) -> None: ...


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


@dataclass(frozen=True)
class Put:
    """Install a build at ``key``: ``rename`` writes a temporary name in the same directory
    and renames it over (package managers), ``write`` rewrites the file in place (cp)."""

    key: Key
    march: str
    mode: Mode
    how: str = "rename"

    @property
    def atomic(self) -> bool:
        return self.how == "rename"

    def apply(self, world: World) -> None:
        file, data = world.new_file(*self.key, self.march, self.mode)
        path = key_path(world.root, self.key)
        if self.how == "rename":
            temporary = path.with_name(f".{path.name}.new")
            _write(temporary, data, self.mode)
            temporary.rename(path)
        else:
            if path.is_symlink():
                path.unlink()
            _write(path, data, self.mode)
        world.model.entries[self.key] = file
        world.model.add_dirs(self.key)


@dataclass(frozen=True)
class Remove:
    key: Key
    atomic = True

    def apply(self, world: World) -> None:
        key_path(world.root, self.key).unlink()
        del world.model.entries[self.key]


@dataclass(frozen=True)
class Chmod:
    key: Key
    mode: Mode
    atomic = True

    def apply(self, world: World) -> None:
        key_path(world.root, self.key).chmod(self.mode)
        old = world.model.entries[self.key]
        assert isinstance(old, File)
        world.model.entries[self.key] = File(old.march, old.label, self.mode)


@dataclass(frozen=True)
class Symlink:
    """A variant that is a relative symlink into the pool (``glibc-hwcaps/pool``, not a level:
    ignored but inside ROOT), to a new file there with that build, or to no file (``march``
    None: dangling). Pool files never change afterwards: see
    :func:`test_symlink_variant_follows_its_target` for links whose target changes."""

    key: Key
    march: str | None
    mode: Mode
    atomic = True

    def apply(self, world: World) -> None:
        generation = next(world.generation)
        pooled = world.root / POOL / str(generation)
        target = None
        if self.march is not None:
            target, data = world.new_file(self.key[0], f"pool/{generation}", self.march,
                                          self.mode)
            _write(pooled, data, self.mode)
        path = key_path(world.root, self.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.new")
        temporary.symlink_to(os.path.relpath(pooled, path.parent))
        temporary.rename(path)
        world.model.entries[self.key] = Link(target)
        world.model.add_dirs(self.key)


@dataclass(frozen=True)
class Move:
    """``mv`` of an entry to another name or tree. Only builds that run everywhere go to the
    baseline (served as it is, whatever it is); links stay in variant trees, where their
    relative target still leads to the same pool file."""

    key: Key
    to: Key
    atomic = True

    def apply(self, world: World) -> None:
        path = key_path(world.root, self.to)
        path.parent.mkdir(parents=True, exist_ok=True)
        key_path(world.root, self.key).rename(path)
        world.model.entries[self.to] = world.model.entries.pop(self.key)
        world.model.add_dirs(self.to)


@dataclass(frozen=True)
class RemoveDir:
    """A directory of a tree, or a whole level's tree (``under`` = ""), removed by ``rm -r``
    or moved out of ROOT with one rename."""

    tree: str | None
    under: str
    how: str = "rm"

    @property
    def atomic(self) -> bool:
        return self.how != "rm"

    def apply(self, world: World) -> None:
        path = tree_dir(world.root, self.tree) / self.under
        if self.how == "rm":
            shutil.rmtree(path)
        else:
            world.staging.mkdir(exist_ok=True)
            path.rename(world.staging / str(next(world.generation)))
        world.model.drop(self.tree, self.under)


@dataclass(frozen=True)
class RemoveVariants:
    """``rm -r glibc-hwcaps``: every level's tree (and the pool) at once."""

    atomic = False

    def apply(self, world: World) -> None:
        shutil.rmtree(world.root / "glibc-hwcaps", ignore_errors=True)
        for level in LEVELS:
            world.model.drop(level, "")


@dataclass(frozen=True)
class MoveDir:
    """A directory (or a level's whole tree, ``under`` = "") renamed into another level's tree,
    replacing what is there: the watches already on it must now report the new paths."""

    tree: str | None
    under: str
    to: str
    atomic = False

    def apply(self, world: World) -> None:
        target = tree_dir(world.root, self.to) / self.under
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        (tree_dir(world.root, self.tree) / self.under).rename(target)
        model = world.model
        moved = {key: entry for key, entry in model.entries.items()
                 if key[0] == self.tree and _inside(key[1], self.under)}
        dirs = {d for d in model.dirs if d[0] == self.tree and _inside(d[1], self.under)}
        model.drop(self.tree, self.under)
        model.drop(self.to, self.under)
        model.entries.update({(self.to, name): entry for (_, name), entry in moved.items()})
        model.dirs |= {(self.to, ""), *((self.to, d) for _, d in dirs)}


@dataclass(frozen=True)
class MoveIn:
    """A directory (``under``, or a level's whole tree for "") prepared outside ROOT and moved
    in with one rename, after removing the one it replaces: its files appear without an
    inotify event of their own."""

    tree: str | None
    under: str
    files: tuple[tuple[str, str, Mode], ...]
    atomic = False

    def apply(self, world: World) -> None:
        top = self.under or "."
        staged = world.staging / str(next(world.generation))
        (staged / top).mkdir(parents=True)
        made = {}
        for name, march, mode in self.files:
            made[(self.tree, name)], data = world.new_file(self.tree, name, march, mode)
            _write(staged / name, data, mode)
        target = tree_dir(world.root, self.tree) / self.under
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        (staged / top).rename(target)
        world.model.drop(self.tree, self.under)
        world.model.dirs |= {(self.tree, ""), (self.tree, self.under)}
        for key, file in made.items():
            world.model.entries[key] = file
            world.model.add_dirs(key)


# -- strategies -------------------------------------------------------------------------------


def order(key: tuple[str | None, str]) -> tuple[int, str]:
    return TREES.index(key[0]), key[1]


def marches(tree: str | None) -> st.SearchStrategy[str]:
    """Builds for ``tree``: its own first (what shrinking goes to), then the misfits."""
    if tree is None:
        return st.sampled_from((BASELINE, SCRIPT))
    return st.sampled_from((tree, SCRIPT, *(march for march in MARCHES if march != tree)))


modes = st.sampled_from(MODES)
keys = st.tuples(st.sampled_from(TREES), st.sampled_from(NAMES))
variant_keys = st.tuples(st.sampled_from(LEVELS), st.sampled_from(NAMES))


def puts() -> st.SearchStrategy[Put]:
    return keys.flatmap(lambda key: st.builds(Put, st.just(key), marches(key[0]), modes,
                                              st.sampled_from(("rename", "write"))))


def symlinks() -> st.SearchStrategy[Symlink]:
    return variant_keys.flatmap(lambda key: st.builds(
        Symlink, st.just(key), st.one_of(marches(key[0]), st.none()), modes))


def moves_in() -> st.SearchStrategy[MoveIn]:
    def files(place: tuple[str | None, str]) -> st.SearchStrategy[MoveIn]:
        tree, under = place
        names = [name for name in NAMES if _inside(name, under)]
        entry = st.sampled_from(names).flatmap(
            lambda name: st.tuples(st.just(name), marches(tree), modes))
        return st.lists(entry, max_size=3, unique_by=lambda e: e[0]).map(
            lambda chosen: MoveIn(tree, under, tuple(chosen)))
    places = [(tree, under) for tree in TREES for under in ("", *DIRS)
              if tree is not None or under]
    return st.sampled_from(places).flatmap(files)


def moves(model: Model, present: list[Key]) -> st.SearchStrategy[Move]:
    def destinations(key: Key) -> st.SearchStrategy[Move]:
        entry = model.entries[key]
        everywhere = isinstance(entry, File) and entry.march in (BASELINE, SCRIPT)
        allowed = [to for to in itertools.product(TREES if everywhere else LEVELS, NAMES)
                   if to != key]
        return st.builds(Move, st.just(key), st.sampled_from(allowed))
    return st.sampled_from(present).flatmap(destinations)


def changes(model: Model) -> st.SearchStrategy[Change]:
    """A change that makes sense for the store as the model has it now."""
    present = sorted(model.entries, key=order)
    files = [key for key in present if isinstance(model.entries[key], File)]
    dirs = sorted((d for d in model.dirs if d != (None, "")), key=order)
    options: list[st.SearchStrategy[Change]] = [puts(), symlinks(), moves_in(),
                                                st.just(RemoveVariants())]
    if present:
        options += [st.builds(Remove, st.sampled_from(present)), moves(model, present)]
    if files:
        options.append(st.builds(Chmod, st.sampled_from(files), modes))
    if dirs:
        options.append(st.tuples(st.sampled_from(dirs), st.sampled_from(("rm", "move out")))
                       .map(lambda chosen: RemoveDir(*chosen[0], chosen[1])))
        options.append(st.tuples(st.sampled_from(dirs), st.sampled_from(LEVELS))
                       .filter(lambda chosen: chosen[0][0] != chosen[1])
                       .map(lambda chosen: MoveDir(*chosen[0], chosen[1])))
    return st.one_of(options)


# -- observing the mount ----------------------------------------------------------------------


def look(path: Path, builds: Builds) -> object:
    """(user.hwcaps.level, label of the bytes read, mode) of ``path``; None when absent."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        level = os.getxattr(path, "user.hwcaps.level", follow_symlinks=False).decode()
        return level, builds.label_of(path.read_bytes()), f"{stat.S_IMODE(mode):o}"
    except OSError as exc:
        return f"error: {exc}"


def listing(path: Path) -> list[str] | None:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return None


def observe(mnt: Path, builds: Builds) -> dict[str, object]:
    """Every directory's listing and, for every possible name, what a lookup of it finds
    (absent names included: a stale entry would still answer)."""
    view: dict[str, object] = {"": listing(mnt)}
    for d in DIRS:
        view[d] = listing(mnt / d)
    for name in NAMES:
        view[name] = look(mnt / name, builds)
    return view


def expected_view(model: Model, active: tuple[str, ...]) -> dict[str, object]:
    """What :func:`observe` must give for ``model``."""
    dirs = sorted({d for _, d in model.dirs if d})
    view: dict[str, object] = {"": dirs}
    for d in DIRS:
        present = [posixpath.basename(name) for name in NAMES
                   if posixpath.dirname(name) == d and served(model, name, active)]
        view[d] = sorted(present) if d in dirs else None
    for name in NAMES:
        s = served(model, name, active)
        view[name] = None if s is None else (s.level, s.file.label, f"{s.file.mode:o}")
    return view


def run(path: Path) -> tuple[int, str]:
    """(exit status, output) of executing ``path``; (-errno, message) when exec fails."""
    try:
        result = subprocess.run([str(path)], capture_output=True, text=True,
                                timeout=EXEC_TIMEOUT, check=False)
    except OSError as exc:
        return -(exc.errno or 0), f"exec failed: {exc.strerror}"
    return result.returncode, (result.stdout.strip() or result.stderr.strip())


def differences(seen: dict[str, object], wanted: dict[str, object]) -> str:
    return "\n".join(f"  {key or '/'}: mount {seen[key]!r}, model {wanted[key]!r}"
                     for key in wanted if seen.get(key) != wanted[key])


def agree(mnt: Path, world: World, active: tuple[str, ...], log: Callable[[], str]) -> None:
    """Wait until the mount shows what the model says, then run every runnable name."""
    wanted = expected_view(world.model, active)
    deadline = time.monotonic() + CONVERGE
    while (seen := observe(mnt, world.builds)) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"the mount still disagrees with the model after {CONVERGE} s:\n"
                                 f"{differences(seen, wanted)}\ndaemon log:\n{log()}")
        time.sleep(0.02)
    for name in NAMES:
        s = served(world.model, name, active)
        if s is not None and s.executable:
            ran = run(mnt / name)
            assert ran == (0, s.file.label), f"{name} ran {ran}, the model says {s.file.label}"


def runs_during(mnt: Path, before: Model, after: Model, active: tuple[str, ...]) -> None:
    """Right after an atomic change: each name runnable before and after runs one of the two
    builds (the old inode's or the new one's), never fails."""
    for name in NAMES:
        old, new = served(before, name, active), served(after, name, active)
        if old and new and old.executable and new.executable:
            code, output = run(mnt / name)
            assert code == 0 and output in {old.file.label, new.file.label}, (
                f"{name}: exec gave {code} {output!r} during the change from "
                f"{old.file.label} to {new.file.label}")


# -- the test ---------------------------------------------------------------------------------

#: Steps per example; each applies up to BURST changes back to back before checking.
STEPS = 8
BURST = 3


@pytest.fixture(scope="module")
def active() -> tuple[str, ...]:
    """The levels this machine searches, highest first (what the daemon detects too)."""
    detection = detect(DetectOptions())
    if detection.architecture.name != X86_64.name:
        pytest.skip(f"the fuzzed stores are x86-64 ones, this is {detection.architecture.name}")
    return detection.active_levels()


@pytest.fixture(scope="module")
def builds(binaries: Path) -> Builds:
    return Builds(binaries)


# No explain phase: it reruns failing cases many times (each one a mount and seconds of
# waiting) to say which lines ran; the drawn changes already say what happened.
@settings(max_examples=EXAMPLES, deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mount_follows_random_changes(builds: Builds, active: tuple[str, ...],
                                      data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(prefix="hwcaps-fs-fuzz-") as tmp:
        # Searchable by all, as the view shows a file's group and other bits only to those who
        # could search every directory above it (hwcaps_fs.core.access).
        os.chmod(tmp, 0o755)
        world = World(Path(tmp, "store"), Path(tmp, "staging"), builds)
        world.root.mkdir()
        mnt = Path(tmp, "mnt")
        mnt.mkdir()
        initial = st.lists(st.one_of(puts(), symlinks()), min_size=1, max_size=8)
        for entry in data.draw(initial, label="initial store"):
            entry.apply(world)
        with mounted(world.root, mnt) as mount:
            agree(mnt, world, active, mount.log_text)
            for step in range(1, STEPS + 1):
                before = Model(dict(world.model.entries), set(world.model.dirs))
                burst = data.draw(st.integers(1, BURST), label=f"changes in step {step}")
                for n in range(1, burst + 1):
                    change = data.draw(changes(world.model), label=f"change {step}.{n}")
                    change.apply(world)
                if burst == 1 and change.atomic:
                    runs_during(mnt, before, world.model, active)
                agree(mnt, world, active, mount.log_text)


def relink(world: World, key: Key, to: Key) -> None:
    """Make ``key`` a relative symlink to the entry ``to``, atomically (rename over)."""
    path = key_path(world.root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.new")
    temporary.symlink_to(os.path.relpath(key_path(world.root, to), path.parent))
    temporary.rename(path)


def label(world: World, key: Key) -> str:
    entry = world.model.entries[key]
    assert isinstance(entry, File)
    return entry.label


@pytest.fixture
def world(builds: Builds, active: tuple[str, ...]) -> Iterator[World]:
    """An empty store in a fresh directory searchable by all (for the tests of one case)."""
    if not active:
        pytest.skip("this CPU searches no variant level")
    with tempfile.TemporaryDirectory(prefix="hwcaps-fs-fuzz-") as tmp:
        os.chmod(tmp, 0o755)
        world = World(Path(tmp, "store"), Path(tmp, "staging"), builds)
        Path(tmp, "mnt").mkdir()
        yield world


def test_symlink_variant_follows_its_target(world: World, active: tuple[str, ...]) -> None:
    """A variant that is a symlink to another file of the store serves the new build once
    that file is replaced (found by the fuzzing above, with links to store entries)."""
    mnt = world.root.parent / "mnt"
    upgrade = Put((None, "bin/a"), BASELINE, Mode(0o755))
    upgrade.apply(world)
    relink(world, (active[0], "sbin/c"), (None, "bin/a"))
    with mounted(world.root, mnt):
        upgrade.apply(world)
        new = label(world, (None, "bin/a"))
        wait_until(lambda: run(mnt / "bin/a") == (0, new), CONVERGE, f"bin/a to run {new}")
        wait_until(lambda: run(mnt / "sbin/c") == (0, new), CONVERGE,
                   f"sbin/c to run {new} (just after the change: {run(mnt / 'sbin/c')})")


def test_dangling_symlink_variant_appears_with_its_target(world: World,
                                                          active: tuple[str, ...]) -> None:
    mnt = world.root.parent / "mnt"
    relink(world, (active[0], "sbin/c"), (None, "bin/a"))
    with mounted(world.root, mnt):
        assert os.listdir(mnt / "sbin") == []
        Put((None, "bin/a"), BASELINE, Mode(0o755)).apply(world)
        wanted = label(world, (None, "bin/a"))
        wait_until(lambda: run(mnt / "sbin/c") == (0, wanted), CONVERGE,
                   f"sbin/c to run {wanted} (just after the change: {run(mnt / 'sbin/c')})")


def test_symlink_chain_follows_a_repointed_link(world: World, active: tuple[str, ...]) -> None:
    mnt = world.root.parent / "mnt"
    for name in ("bin/b", "sbin/c"):
        Put((None, name), BASELINE, Mode(0o755)).apply(world)
    relink(world, (active[0], "bin/b"), (None, "bin/b"))
    relink(world, (active[0], "bin/a"), (active[0], "bin/b"))
    with mounted(world.root, mnt):
        assert run(mnt / "bin/a") == (0, label(world, (None, "bin/b")))
        relink(world, (active[0], "bin/b"), (None, "sbin/c"))
        wanted = label(world, (None, "sbin/c"))
        wait_until(lambda: run(mnt / "bin/b") == (0, wanted), CONVERGE, f"bin/b to run {wanted}")
        wait_until(lambda: run(mnt / "bin/a") == (0, wanted), CONVERGE,
                   f"bin/a to run {wanted} (just after the change: {run(mnt / 'bin/a')})")
