"""Downloads with checksum verification, resumable after an interruption, written atomically.

The bytes go to `<file>.part`; a later call asks the server for the rest (HTTP Range) and the file is
renamed into place only once its MD5 matches, so a reader never sees a partial or corrupt file."""
from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import CnnlabError
from .limits import DOWNLOAD, limit

CHUNK = 1 << 20
MIN_RATE = 1 << 10  # bytes a second, below which a download is given up (and kept to resume)


def digest(path: Path, algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def md5sum(path: Path) -> str:
    return digest(path, "md5")


def download(url: str, dest: Path, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch `url` into `dest` unless a verified copy is already there."""
    dest = Path(dest)
    if dest.exists() and (md5 is None or md5sum(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have > 0 and response.status == 206
            length = response.headers.get("Content-Length")
            expected = (have if resumed else 0) + int(length) if length is not None else None
            cap = limit(DOWNLOAD)
            window, received = time.monotonic(), 0
            with open(part, "ab" if resumed else "wb") as f:
                # read1: whatever has arrived, so a server that trickles is seen without waiting for a block
                for block in iter(lambda: response.read1(CHUNK), b""):
                    if f.tell() + len(block) > cap:  # a server sending without end would fill the disk
                        f.close()
                        part.unlink()
                        raise CnnlabError(f"download of {url}: over {cap >> 20} MiB ({DOWNLOAD[0]}), more than "
                                          f"the data set is; the partial file was removed")
                    f.write(block)
                    received += len(block)
                    # each read returns within `timeout`, but a byte a second would never end: a floor on
                    # the rate over each window of `timeout` seconds
                    if (elapsed := time.monotonic() - window) >= timeout:
                        if received < MIN_RATE * elapsed:
                            raise CnnlabError(f"download of {url}: under {MIN_RATE >> 10} KiB/s ({received} bytes "
                                              f"in {elapsed:.0f} s); run again to resume")
                        window, received = time.monotonic(), 0
            if expected is not None and part.stat().st_size < expected:  # the connection broke off early
                raise OSError(f"connection closed after {part.stat().st_size} of {expected} bytes")
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part file is already whole
            pass
        else:
            raise CnnlabError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CnnlabError(f"download of {url} failed ({getattr(exc, 'reason', exc)}); "
                          f"run again to resume") from None
    if md5 is not None and (got := md5sum(part)) != md5:
        part.unlink()
        raise CnnlabError(f"download of {url} is corrupt: MD5 {got}, expected {md5}; the partial file was removed")
    os.replace(part, dest)
    return dest
