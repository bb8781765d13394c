"""``python -m hwcaps_fs``: the same as the ``hwcaps-fs`` command."""

import sys

from hwcaps_fs.commands.cli import main

sys.exit(main())
