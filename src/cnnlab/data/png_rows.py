"""Pillow decodes a PNG whose compressed image data ends cleanly before the header's last row as if the
missing rows were black. `missing_rows` counts the rows the data holds, so such a file is refused instead of
read as silently different pixels."""
from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, grey+alpha, RGBA
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
PIECE = 1 << 20  # decompressed a MiB at a time: counted, never held


def missing_rows(data: bytes) -> str | None:
    """None when the PNG `data`'s image data fills every row its header promises (or it is no PNG, or damaged
    in a way Pillow itself reports); otherwise how far it reaches, as 'ends after 3 of 8 rows'."""
    if not data.startswith(SIGNATURE):
        return None
    header, idat, pos = None, [], len(SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            header = data[pos + 8:pos + 8 + length]
        elif kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length  # length, type, data, CRC
    if header is None or len(header) < 13:
        return None
    width, height, depth, colour, _, _, interlaced = struct.unpack(">IIBBBBB", header[:13])
    bits = depth * CHANNELS.get(colour, 0)
    if not bits:
        return None

    def row_bytes(w: int) -> int:  # a filter-type byte, then the row's samples
        return (w * bits + 7) // 8 + 1

    passes = [(len(range(y0, height, dy)), len(range(x0, width, dx))) for x0, y0, dx, dy in ADAM7] \
        if interlaced else [(height, width)]
    expected = sum(rows * row_bytes(w) for rows, w in passes if rows and w)
    got, stream, inflate = 0, b"".join(idat), zlib.decompressobj()
    try:
        while stream and got < expected:
            got += len(inflate.decompress(stream, PIECE))
            stream = inflate.unconsumed_tail
    except zlib.error:
        return None
    if got >= expected:
        return None
    if interlaced:
        return f"ends after {got:,} of the {expected:,} bytes of its interlaced rows"
    return f"ends after {got // row_bytes(width):,} of {height:,} rows"
