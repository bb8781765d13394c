"""What pyproject.toml cannot say to every setuptools hwcaps-fs is built with.

The license: PEP 639's ``license = "MIT"`` needs setuptools 77, Debian 12 has 66, and the table
form that 66 accepts is deprecated from 77 on. pyproject.toml therefore lists ``license`` as
dynamic, and this file gives it.
"""

from setuptools import setup

setup(license="MIT")
