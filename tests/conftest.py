"""Shared fixtures: compiled variant binaries and capability checks that skip with a reason."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hwcaps_fs.detect.cpu import DetectOptions, detect
from tests.builders import gcc_available
from tests.mounting import cleanup
from tests.places import OthersPython, public_temporary_directory, python_for_others
from tests.users import User, missing_tools, temporary_user


def can_mount_fuse() -> str | None:
    """None when real FUSE mounts are possible here, else the reason they are not."""
    if os.geteuid() != 0:
        return "needs root for FUSE mounts with allow_other"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    try:
        import pyfuse3  # noqa: F401
    except ImportError as exc:
        return f"pyfuse3 not importable: {exc}"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``mount`` marker goes on exactly the tests that ask for ``fuse_ok`` (directly or
    through another fixture), which skips them with a reason where mounting is impossible;
    ``make quick`` runs the others. A test marked ``mount`` without it is a mistake."""
    for item in items:
        needs_fuse = "fuse_ok" in getattr(item, "fixturenames", ())
        marked = item.get_closest_marker("mount") is not None
        if marked and not needs_fuse:
            raise pytest.UsageError(f"{item.nodeid}: marked mount but does not use fuse_ok")
        if needs_fuse and not marked:
            item.add_marker(pytest.mark.mount)


@pytest.fixture(scope="session")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session cache directory for compiled test programs (see tests.builders)."""
    if not gcc_available():
        pytest.skip("gcc is not installed: cannot build variant binaries")
    return tmp_path_factory.mktemp("binaries")


@pytest.fixture
def fuse_ok() -> None:
    reason = can_mount_fuse()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def level() -> str:
    """The level this machine serves (the test programs print it)."""
    return detect(DetectOptions()).level


@pytest.fixture(scope="session")
def others_python() -> Iterator[OthersPython]:
    """How ``nobody`` runs this checkout's ``python -m hwcaps_fs`` (see tests.places)."""
    with python_for_others() as python:
        yield python


@pytest.fixture
def store_fd(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A one-script store (``bin/foo``) and a directory fd of it (no mount)."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/foo").write_text("#!/bin/sh\necho base\n")
    (tmp_path / "bin/foo").chmod(0o755)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield tmp_path, fd
    os.close(fd)


@pytest.fixture
def public(fuse_ok: None) -> Iterator[Path]:
    """A directory every user can traverse and where setuid programs work (see
    :func:`public_temporary_directory`), removed afterwards with whatever is mounted at its
    ``mnt`` or ``store``."""
    path = public_temporary_directory("hwcaps-fs-test-")
    try:
        yield path
    finally:
        for mountpoint in (path / "mnt", path / "store"):
            cleanup(mountpoint)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def attacker() -> Iterator[User]:
    """A real non-root user of its own, removed after the test (tests.users)."""
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    with temporary_user() as user:
        yield user


@pytest.fixture(params=["fast path", "stock path"])
def both_exec_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once on each exec path: the fast path (the default) and the stock one,
    ``-o fastpath=off`` (tests.mounting.suite_options; docs/fast-path.md)."""
    if request.param == "stock path":
        options = os.environ.get("HWCAPS_FS_TEST_OPTIONS")
        monkeypatch.setenv("HWCAPS_FS_TEST_OPTIONS",
                           f"{options},fastpath=off" if options else "fastpath=off")
    return str(request.param)
