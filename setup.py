"""What pyproject.toml cannot say to every setuptools hwcaps-fs is built with.

The license: PEP 639's ``license = "MIT"`` needs setuptools 77, Debian 12 has 66, and the table
form that 66 accepts is deprecated from 77 on. pyproject.toml therefore lists ``license`` as
dynamic, and this file gives it.

The fast-path library, hwcaps_fs/fuse/_fastpath.c (docs/fast-path.md): a plain shared library
loaded with ctypes, not a Python module, built as an extension so that ``pip install`` and
Debian's pybuild compile it and ship it inside the package (``ext-modules`` in pyproject.toml
needs setuptools 74). It needs libfuse3's headers (which pyfuse3 needs too) but links no
libfuse. When it cannot be built the package installs without it and the daemon serves with one
request per exec, saying why.
"""

import shlex
import subprocess

from setuptools import Extension, setup


def fuse3_cflags() -> list[str]:
    try:
        found = subprocess.run(["pkg-config", "--cflags", "fuse3"], capture_output=True,
                               text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ["-I/usr/include/fuse3"]
    return shlex.split(found.stdout)


setup(
    license="MIT",
    ext_modules=[Extension(
        "hwcaps_fs.fuse._fastpath",
        sources=["hwcaps_fs/fuse/_fastpath.c"],
        extra_compile_args=[*fuse3_cflags(), "-fvisibility=hidden", "-Wall", "-Wextra"],
        libraries=["dl"],
        optional=True,
    )],
)
