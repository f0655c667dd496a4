"""libjpeg decodes a JPEG whose compressed data stops before the image does (a file cut short with an end
marker after the cut, or a code its Huffman tables lack) by filling the missing blocks with grey, and only
warns; Pillow does not pass the warning on. `damaged_scan` decodes the file once more with libjpeg-turbo
through simplejpeg, which raises on those warnings, so such a file is refused instead of read as silently
different pixels. JPEG holds no checksum: a changed byte that still decodes to whole blocks cannot be told."""
from __future__ import annotations

import simplejpeg

FORMATS = {"JPEG", "MPO"}  # Pillow's names for files whose (first) image `damaged_scan` reads

# libjpeg's warnings (jerror.h) that mean it made pixels up, and what they say of the file. Others are
# accepted: "extraneous bytes before marker" (data after the last block, which some cameras write) and
# header oddities leave every block decoded from the file's own data.
_MADE_UP = {
    "premature end of data segment": "ends before its last block",
    "Premature end of JPEG file": "ends before its last block",
    "bad Huffman code": "holds a code its Huffman tables lack",
    "bad arithmetic code": "holds a code its arithmetic coder cannot read",
    "instead of RST": "lost its place between restart markers",
    "Inconsistent progression sequence": "lacks part of its progressive scans",
}


def damaged_scan(data: bytes) -> str | None:
    """What is wrong with the compressed data of the JPEG `data` that libjpeg would cover with made-up
    pixels, or None. Files libjpeg-turbo's simplified interface cannot read at all (Pillow has read them
    already) are not judged here."""
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)  # one channel: the Huffman data is all read
    except ValueError as exc:
        return next((why for warning, why in _MADE_UP.items() if warning in str(exc)), None)
    return None
