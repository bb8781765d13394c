"""A system packaged for hwcaps-loader (Solus' layout), served without repackaging: the view of
``/usr/hwcaps`` (loader layout) and an in-place view of ``/usr/bin`` whose links to the loader
lead into it (``-o loader_links``). Real mounts, real builds; the loader is a stand-in that
says it ran, so a test sees when it is still in the path."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hwcaps_fs.core.levels import X86_64
from hwcaps_fs.core.loader_links import is_loader_link
from hwcaps_fs.core.mount_options import parse_mount_options
from hwcaps_fs.errors import UsageError
from tests.builders import compile_level, install
from tests.mounting import assert_one_line_error, is_fuse_mounted, mounted
from tests.mounting import hwcaps_fs as mount_command
from tests.test_cli import hwcaps_fs

LOADER = "#!/bin/sh\necho 'hwcaps-loader ran'\n"


def run(path: Path) -> str:
    return subprocess.run([str(path)], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


def solus_system(binaries: Path, usr: Path) -> Path:
    """usr/bin/foo -> hwcaps-loader (relative, and bar absolute), builds of foo and bar in
    usr/hwcaps/<level>/bin, the baseline in x86-64-v1; usr/bin/plain is not a loader link."""
    (usr / "bin").mkdir(parents=True)
    loader = usr / "bin/hwcaps-loader"
    loader.write_text(LOADER)
    loader.chmod(0o755)
    os.symlink("hwcaps-loader", usr / "bin/foo")
    os.symlink(str(loader), usr / "bin/bar")
    install(compile_level(binaries, "baseline", text="plain"), usr / "bin/plain")
    for level in ("x86-64-v1", "x86-64-v2", "x86-64-v3"):
        for name in ("foo", "bar"):
            install(compile_level(binaries, level), usr / "hwcaps" / level / "bin" / name)
    return usr


def test_loader_links_are_recognised() -> None:
    assert is_loader_link("hwcaps-loader") and is_loader_link("/usr/bin/hwcaps-loader")
    assert not is_loader_link("/etc/alternatives/awk")
    options = parse_mount_options(["loader_links=/run/hwcaps-fs/usr/bin/"], is_root=True)
    assert options.loader_links == "/run/hwcaps-fs/usr/bin"
    with pytest.raises(UsageError, match="absolute"):
        parse_mount_options(["loader_links=relative/bin"], is_root=True)


def test_a_hwcaps_loader_system_served_without_repackaging(binaries: Path, public: Path,
                                                           level: str) -> None:
    usr = solus_system(binaries, public / "store" / "usr")
    served = min(level, "x86-64-v3", key=lambda name: X86_64.rank(name))
    expected = "x86-64-v1" if served == "baseline" else served
    assert run(usr / "bin/foo") == "hwcaps-loader ran"
    view = public / "mnt"
    view.mkdir()
    with mounted(usr / "hwcaps", view, "--layout", "loader"):
        assert run(view / "bin/foo") == expected
        with mounted(usr / "bin", usr / "bin", "-o", f"loader_links={view}/bin"):
            for name in ("foo", "bar"):
                assert os.readlink(usr / "bin" / name) == f"{view}/bin/{name}"
                assert run(usr / "bin" / name) == expected
            assert run(usr / "bin/plain") == "plain"
            assert run(usr / "bin/hwcaps-loader") == "hwcaps-loader ran"
        # Unmounted, the directory is what the packages installed.
        assert os.readlink(usr / "bin/foo") == "hwcaps-loader"
        assert run(usr / "bin/foo") == "hwcaps-loader ran"


def test_the_documented_fstab_lines_parse() -> None:
    """docs/hwcaps-loader.md's fstab lines are accepted as they are written."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "hwcaps-loader.md").read_text()
    lines = [line.split() for line in doc.splitlines() if "fuse.hwcaps-fs" in line]
    assert [fields[1] for fields in lines] == ["/run/hwcaps-loader-view", "/usr/bin"]
    view, usr_bin = (parse_mount_options([fields[3]], is_root=True) for fields in lines)
    assert view.layout is not None and view.layout.value == "loader"
    assert usr_bin.loader_links == "/run/hwcaps-loader-view/bin"


def test_which_points_a_loader_link_to_loader_links(binaries: Path, tmp_path: Path) -> None:
    usr = solus_system(binaries, tmp_path / "usr")
    result = hwcaps_fs("which", str(usr / "bin"), "foo")
    assert result.returncode == 0, result.stderr
    assert "a link to hwcaps-loader" in result.stdout and "loader_links" in result.stdout
    served = hwcaps_fs("which", "--layout", "loader", str(usr / "hwcaps"), "bin/foo")
    assert served.returncode == 0 and "loader_links" not in served.stdout
    # hwcaps-loader's 32-bit levels are reported for what they are, and ignored.
    (usr / "hwcaps/i686/bin").mkdir(parents=True)
    check = hwcaps_fs("check", "--layout", "loader", str(usr / "hwcaps"))
    assert check.returncode == 0
    assert ("warning: ignored i686: a hwcaps-loader level for 32-bit x86 builds; "
            "glibc-hwcaps has none") in check.stdout


def test_loader_links_into_a_directory_a_user_can_change_is_refused(binaries: Path,
                                                                   public: Path) -> None:
    """Root would run whatever a user put there: the mount is refused, nothing is mounted."""
    usr = solus_system(binaries, public / "store" / "usr")
    owned = public / "owned"
    (owned / "bin").mkdir(parents=True)
    os.chown(owned, 65534, 65534)
    shared = public / "shared/bin"
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    for directory in (owned / "bin", shared):
        result = mount_command("mount", "-o", f"loader_links={directory}", str(usr / "bin"))
        assert_one_line_error(result, 3)
        assert "and root would run what they put there" in result.stderr
        assert not is_fuse_mounted(usr / "bin")
    missing = mount_command("mount", "-o", f"loader_links={public}/nothing", str(usr / "bin"))
    assert_one_line_error(missing, 3)


def test_the_levels_view_leads_loader_links_to_each_level(binaries: Path, public: Path) -> None:
    """With ``-o levels_view`` on both views, a link to the loader under
    ``.hwcaps/<level>/`` leads to that level's build in the view of ``/usr/hwcaps``, not to
    the loader (which picks by CPUID) nor to this CPU's build."""
    usr = solus_system(binaries, public / "store" / "usr")
    view = public / "mnt"
    view.mkdir()
    with mounted(usr / "hwcaps", view, "--layout", "loader", "-o", "levels_view"), \
            mounted(usr / "bin", usr / "bin", "-o", f"loader_links={view}/bin,levels_view"):
        levels = sorted(os.listdir(usr / "bin/.hwcaps"), key=X86_64.rank)
        assert len(levels) > 1
        for level in levels:
            built = min(level, "x86-64-v3", key=X86_64.rank)
            expected = "x86-64-v1" if X86_64.rank(built) == 0 else built
            for name in ("foo", "bar"):
                link = usr / "bin/.hwcaps" / level / name
                assert os.readlink(link) == f"{view}/.hwcaps/{level}/bin/{name}"
                assert run(link) == expected
            assert run(usr / "bin/.hwcaps" / level / "plain") == "plain"
