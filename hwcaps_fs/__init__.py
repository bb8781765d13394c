"""hwcaps-fs: glibc-hwcaps for executables, as a FUSE view of a bin directory."""

from hwcaps_fs.fuse import fastpath as _fastpath

#: The one place the version is written (pyproject.toml reads it from here).
__version__ = "0.1.0"

# Before any module of the package imports pyfuse3: see hwcaps_fs/fuse/fastpath.py.
_fastpath.load()
