"""debian/ agrees with the Python package: the version a .deb gets, the license it states.
(Building and installing the package: make deb, make deb-test.)"""

from __future__ import annotations

from pathlib import Path

import hwcaps_fs

DEBIAN = Path(__file__).resolve().parents[1] / "debian"


def test_the_changelog_names_the_version_of_the_package() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"hwcaps-fs ({hwcaps_fs.__version__}) ")


def test_the_copyright_file_states_the_license_file() -> None:
    """debian/copyright carries LICENSE's terms (Debian calls MIT "Expat")."""
    terms = (DEBIAN.parent / "LICENSE").read_text().split("\n\n", 2)[2].split()
    stated = (DEBIAN / "copyright").read_text().split("License: Expat\n", 2)[2]
    assert stated.replace("\n .\n", "\n").split() == terms
