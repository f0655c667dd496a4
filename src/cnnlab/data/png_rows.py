"""Pillow decodes a PNG whose compressed image data ends cleanly before the header's last row as if the
missing rows were black. `missing_rows` counts the rows the data holds, so such a file is refused instead of
read as silently different pixels."""
from __future__ import annotations

import io
import struct
import zlib
from typing import BinaryIO

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, grey+alpha, RGBA
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
PIECE = 1 << 20  # decompressed a MiB at a time: counted, never held
CARRIERS = {"ICO", "ICNS"}  # formats whose images may be PNG files inside them
CHECKED = {"PNG", *CARRIERS}  # the formats `missing_rows_in` reads


def missing_rows(stream: BinaryIO) -> str | None:
    """None when the PNG in `stream` (at its start) has image data for every row its header promises (or it
    is no PNG, or damaged in a way Pillow itself reports); otherwise how far it reaches, as 'ends after 3 of 8
    rows', or that its palette is missing. Reads chunk by chunk: a file of any size is never held whole."""
    if stream.read(len(SIGNATURE)) != SIGNATURE:
        return None
    head = stream.read(8)
    if len(head) < 8 or head[4:] != b"IHDR":
        return None
    header = stream.read(13)
    if len(header) < 13:
        return None
    width, height, depth, colour, _, _, interlaced = struct.unpack(">IIBBBBB", header)
    bits = depth * CHANNELS.get(colour, 0)
    if not bits:
        return None
    passes = [(len(range(y0, height, dy)), len(range(x0, width, dx))) for x0, y0, dx, dy in ADAM7] \
        if interlaced else [(height, width)]
    expected = sum(rows * _row_bytes(w, bits) for rows, w in passes if rows and w)
    stream.seek(struct.unpack(">I", head[:4])[0] - 13 + 4, io.SEEK_CUR)  # the rest of IHDR, its CRC
    got, inflate, palette = 0, zlib.decompressobj(), False
    try:
        while got < expected and not inflate.eof and len(head := stream.read(8)) == 8 and head[4:] != b"IEND":
            length = struct.unpack(">I", head[:4])[0]
            if head[4:] != b"IDAT":
                palette |= head[4:] == b"PLTE"
                stream.seek(length + 4, io.SEEK_CUR)
                continue
            if colour == 3 and not palette:  # the PNG standard requires it first; Pillow would paint black
                return "indexes a palette the file lacks"
            while length and got < expected and not inflate.eof and (data := stream.read(min(PIECE, length))):
                length -= len(data)
                while data and got < expected:  # counted a piece at a time, never held
                    got += len(inflate.decompress(data, PIECE))
                    data = inflate.unconsumed_tail
            stream.seek(length + 4, io.SEEK_CUR)  # what is left of the chunk, its CRC
    except zlib.error:
        return None
    if got >= expected:
        return None
    if interlaced:
        return f"ends after {got:,} of the {expected:,} bytes of its interlaced rows"
    return f"ends after {got // _row_bytes(width, bits):,} of {height:,} rows"


def _row_bytes(width: int, bits: int) -> int:
    """A row's bytes in the decompressed data: a filter-type byte, then its samples."""
    return (width * bits + 7) // 8 + 1


def missing_rows_in(stream: BinaryIO, image_format: str, cap: int) -> str | None:
    """`missing_rows` of a PNG file, or of every PNG inside an icon file (ICO, ICNS: `CARRIERS`), whose first
    `cap` bytes are read; None for other formats."""
    if image_format == "PNG":
        return missing_rows(stream)
    if image_format not in CARRIERS:
        return None
    data = stream.read(cap)
    whole = io.BytesIO(data)  # one buffer, read from each PNG's offset: no copy per PNG
    at = data.find(SIGNATURE)
    while at >= 0:
        whole.seek(at)
        short = missing_rows(whole)
        if short:
            return short
        at = data.find(SIGNATURE, at + 1)
    return None
