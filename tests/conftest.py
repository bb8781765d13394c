"""Shared fixtures: compiled variant binaries and capability checks that skip with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.builders import gcc_available


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
