"""The FUSE request handlers' guard (no mount needed; the handlers themselves are tested
through real mounts)."""

from __future__ import annotations

import errno

import pyfuse3
import pytest
import trio

from hwcaps_fs.fuse.operations import guarded


def test_a_crashing_handler_answers_eio() -> None:
    @guarded
    async def handler(value: int) -> int:
        return 1 // value

    assert trio.run(handler, 1) == 1
    with pytest.raises(pyfuse3.FUSEError) as caught:
        trio.run(handler, 0)
    assert caught.value.errno == errno.EIO
