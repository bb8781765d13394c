"""hwcaps-fs: glibc-hwcaps for executables, as a FUSE view of a bin directory."""

__version__ = "0.1.0"
