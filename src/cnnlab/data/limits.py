"""Caps on what one input file may make cnnlab decompress and hold in memory, each set by an environment
variable: a 3.7 KB archive must not become gigabytes of memory."""
from __future__ import annotations

import os

from ..errors import CnnlabError
from ..runtime.memory import total_memory

MEMBER = ("CNNLAB_MAX_MEMBER_BYTES", 256 << 20)  # one archive member, or one decompressed data file
TOTAL = ("CNNLAB_MAX_ARCHIVE_BYTES", 4 << 30)  # a whole decompressed archive, and the members read from it
DOWNLOAD = ("CNNLAB_MAX_DOWNLOAD_BYTES", 1 << 30)  # one downloaded file (the largest registered: 170 MB)


DECODED = ("CNNLAB_MAX_DECODED_BYTES", min(total_memory() // 2, 1 << 60))  # the decoded images of one data set


def limit(setting: tuple[str, int]) -> int:
    name, default = setting
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value <= 0:
        raise CnnlabError(f"{name}={raw!r}: expected a positive number of bytes")
    return value


def human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def over(what: str, size: int, setting: tuple[str, int]) -> CnnlabError:
    return CnnlabError(f"{what} is {human(size)}, over the limit of {human(limit(setting))} (raise it with "
                       f"{setting[0]}=BYTES if the file is trusted)")
