"""Hostile, damaged and odd inputs: each is read correctly or refused in one line naming the culprit."""
import gzip
import io
import os
import pickle
import struct
import sys
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

from cnnlab import CnnlabError
from cnnlab.data import check_holdout, check_trainable, load_dataset
from cnnlab.data.dataset import ImageDataset
from tests.data.writers import (class_members, idx_bytes, image_bytes, png_with_size, write_cifar10, write_folder,
                                write_mnist, write_tar)


def refused(match: str, *args, **kwargs) -> str:
    """load_dataset(*args) must raise a one-line CnnlabError matching `match`; returns the message."""
    with pytest.raises(CnnlabError, match=match) as info:
        load_dataset(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and " object at 0x" not in message, message
    return message


# --- image modes -------------------------------------------------------------------------------------------

def _mode_image(kind: str) -> tuple[Image.Image, np.ndarray]:
    """(image, the uint8 pixels cnnlab must decode it to); transparency composites on white."""
    if kind == "I;16":  # a 16-bit greyscale PNG: scaled to 8 bits, not clipped at 255
        v = np.array([[0, 257 * 100, 40000, 65535]], np.uint16)
        return Image.fromarray(v), np.array([[0, 100, 40000 >> 8, 255]], np.uint8)
    if kind == "LA":
        im = Image.new("LA", (2, 1))
        im.putdata([(200, 255), (200, 0)])
        return im, np.array([[200, 255]], np.uint8)
    if kind == "RGBA":
        im = Image.new("RGBA", (2, 1))
        im.putdata([(10, 20, 30, 255), (10, 20, 30, 0)])
        return im, np.array([[[10, 20, 30], [255, 255, 255]]], np.uint8)
    if kind == "P+transparency":
        im = Image.new("P", (2, 1))
        im.putpalette([0, 0, 0, 90, 60, 30] + [0] * 762)
        im.putdata([1, 0])
        im.info["transparency"] = 0
        return im, np.array([[[90, 60, 30], [255, 255, 255]]], np.uint8)
    if kind == "P":
        im = Image.new("P", (2, 1))
        im.putpalette([5, 6, 7, 90, 60, 30] + [0] * 762)
        im.putdata([1, 0])
        return im, np.array([[[90, 60, 30], [5, 6, 7]]], np.uint8)
    if kind == "1":
        im = Image.new("1", (2, 1))
        im.putdata([0, 1])
        return im, np.array([[0, 255]], np.uint8)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["I;16", "LA", "RGBA", "P+transparency", "P", "1"])
def test_image_modes_decode_to_8_bits_explicitly(tmp_path, kind):
    im, expected = _mode_image(kind)
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(3):
            im.save(tmp_path / "d" / c / f"{i}.png", transparency=im.info.get("transparency"))
    ds = load_dataset(str(tmp_path / "d"), holdout=1)
    got = ds.train_x[0]
    np.testing.assert_array_equal(got[..., 0] if expected.ndim == 2 else got, expected)
    assert ds.channels == (1 if expected.ndim == 2 else 3)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "d" / c / f"{i}.jpg", quality=100)
    ds = load_dataset(str(tmp_path / "d"), holdout=1)
    assert ds.channels == 3 and ds.train_x.min() >= 250  # no ink: white


def test_16_bit_classes_stay_apart(tmp_path):
    """The issue's probe: class a in the lower half of 0..65535, class b in the upper half."""
    rng = np.random.default_rng(0)
    for c, (lo, hi) in {"a": (0, 32768), "b": (32768, 65536)}.items():
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(lo, hi, (6, 6)).astype(np.uint16)).save(tmp_path / "d" / c / f"{i}.png")
    ds = load_dataset(str(tmp_path / "d"), holdout=1)
    assert ds.train_x[ds.train_y == 0].max() < 128 <= ds.train_x[ds.train_y == 1].min()


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((4, 8, 3), np.uint8)  # 8 wide, 4 high, the left half white
    pixels[:, :4] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(pixels).save(tmp_path / "d" / c / f"{i}.png", exif=exif)
    ds = load_dataset(str(tmp_path / "d"), holdout=1)
    assert ds.image_size == (8, 4)  # 8 high, 4 wide once upright
    assert ds.train_x[0, :4].min() == 255 and ds.train_x[0, 4:].max() == 0  # the white half is now on top


def test_decompression_bomb_is_one_line_or_skipped(tmp_path):
    write_folder(tmp_path / "d", per_class=3)
    (tmp_path / "d" / "cat" / "bomb.png").write_bytes(png_with_size(20000, 20000))
    refused(r"cat/bomb.png: 400,000,000 pixels .*decompression bomb", str(tmp_path / "d"), holdout=1)
    ds = load_dataset(str(tmp_path / "d"), holdout=1, skip_bad=True)
    assert ds.notes == ["skipped 1 unreadable image"] and len(ds.train_y) + len(ds.test_y) == 9


def test_a_strip_of_pixels_is_refused_before_it_is_decoded():
    """1 x 80,000,000 is under Pillow's pixel limit, and the 1 KB file's few rows decode without an error: the
    rest became gigabytes of zeros in predict and augment."""
    from cnnlab.data import decode_image

    with pytest.raises(CnnlabError, match=r"^tall.png: 1x80,000,000 pixels, a side over 65,535 \(the most a JPEG"):
        decode_image(png_with_size(1, 80_000_000), "tall.png")
    assert decode_image(image_bytes(np.zeros((65_535, 1), np.uint8)), "tall.png").shape == (65_535, 1)


def _png(width: int, height: int, rows: bytes, interlaced: bool = False, colour: int = 0,
         palette: bytes | None = None) -> bytes:
    """An 8-bit PNG (greyscale, or `colour` 3: palette indices) of a header, a PLTE chunk if `palette` is
    given, and `rows` (each a filter byte, then the samples) as its data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, int(interlaced))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + (chunk(b"PLTE", palette) if palette else b"")
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_palette_png_without_its_palette_is_refused_not_read_as_black():
    from cnnlab.data import decode_image

    rows = (b"\x00" + bytes([1]) * 4) * 4
    whole = _png(4, 4, rows, colour=3, palette=bytes([0, 0, 0, 200, 100, 50]))
    assert decode_image(whole, "whole.png").reshape(-1, 3).tolist() == [[200, 100, 50]] * 16
    with pytest.raises(CnnlabError, match=r"^bare.png: its image data indexes a palette the file lacks"):
        decode_image(_png(4, 4, rows, colour=3), "bare.png")


def test_palette_image_whose_pixels_index_past_its_palette_is_refused_not_read_as_black(tmp_path):
    from cnnlab.data import decode_image

    rows = (b"\x00" + bytes([0, 1, 2, 1])) * 4
    with pytest.raises(CnnlabError, match=r"^short.png: its pixels use colour 2 of a palette of 2 colours "
                                          r"\(a damaged file\)$"):
        decode_image(_png(4, 4, rows, colour=3, palette=bytes([10, 20, 30, 40, 50, 60])), "short.png")
    whole = decode_image(_png(4, 4, rows, colour=3, palette=bytes([10, 20, 30, 40, 50, 60, 70, 80, 90])), "w.png")
    assert whole[0].tolist() == [[10, 20, 30], [40, 50, 60], [70, 80, 90], [40, 50, 60]]
    # the transparent index may lie past the colours: those pixels are see-through, not black
    gif = Image.new("P", (4, 4), 0)
    gif.putpalette([10, 20, 30, 40, 50, 60])
    gif.putpixel((0, 0), 7)
    buf = io.BytesIO()
    gif.save(buf, "PNG", transparency=7)
    assert decode_image(buf.getvalue(), "t.png")[0, 1].tolist() == [10, 20, 30]


def test_png_row_count_stops_reading_where_the_compressed_data_ends():
    """Data after the end of the compressed stream (here 32 MiB of an IDAT) is never read."""
    from cnnlab.data.png_rows import missing_rows

    row = b"\x00" + bytes([200]) * 8
    junk = bytes(32 << 20)
    png = bytearray(_png(8, 8, row * 3))
    iend = png.rindex(b"IEND") - 4
    png[iend:iend] = struct.pack(">I", len(junk)) + b"IDAT" + junk + struct.pack(">I", zlib.crc32(b"IDAT" + junk))
    stream = io.BytesIO(bytes(png))
    assert missing_rows(stream) == "ends after 3 of 8 rows"
    assert stream.tell() < 1 << 20


def test_png_whose_data_ends_before_its_last_row_is_refused_not_read_as_black(tmp_path):
    """A cleanly ended compressed stream with 3 of the header's 8 rows: Pillow fills the other 5 with zeros."""
    from cnnlab.data import decode_image

    row = b"\x00" + bytes([200]) * 8
    assert decode_image(_png(8, 8, row * 8), "whole.png").min() == 200
    with pytest.raises(CnnlabError, match=r"^short.png: its image data ends after 3 of 8 rows \(a cut or damaged"):
        decode_image(_png(8, 8, row * 3), "short.png")
    # interlaced (Adam7): 7 passes of rows at different widths, all of them there
    passes = [(len(range(y0, 5, dy)), len(range(x0, 6, dx))) for x0, y0, dx, dy in
              ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))]
    adam7 = b"".join((b"\x00" + bytes([9]) * w) * h for h, w in passes if h and w)
    assert decode_image(_png(6, 5, adam7, interlaced=True), "interlaced.png").tolist() == [[9] * 6] * 5
    with pytest.raises(CnnlabError, match=r"^interlaced.png: (not a readable image|its image data ends)"):
        decode_image(_png(6, 5, adam7[:-5], interlaced=True), "interlaced.png")
    # the same PNG inside an icon file, which Pillow reads by its content whatever the file's name
    icon = struct.pack("<HHHBBBBHHII", 0, 1, 1, 8, 8, 0, 0, 1, 32, len(_png(8, 8, row * 3)), 22) + _png(8, 8, row * 3)
    with pytest.raises(CnnlabError, match=r"^icon.png: its image data ends after 3 of 8 rows"):
        decode_image(icon, "icon.png")
    write_folder(tmp_path / "d", per_class=3)
    (tmp_path / "d" / "cat" / "short.png").write_bytes(_png(8, 8, row * 3))
    refused(r"cat/short.png: its image data ends after 3 of 8 rows", str(tmp_path / "d"), holdout=1)
    assert load_dataset(str(tmp_path / "d"), holdout=1, skip_bad=True).notes == ["skipped 1 unreadable image"]


def _jpeg(mode: str = "RGB", **save) -> bytes:
    """A 32x32 JPEG of noise (every block coded) in `mode`."""
    pixels = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, "JPEG", quality=75, **save)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["baseline", "progressive", "grey", "cmyk"])
def test_jpeg_cut_mid_scan_with_an_end_marker_is_refused_not_read_as_grey(tmp_path, kind):
    """libjpeg fills the blocks after a cut with grey and only warns; with the end-of-image marker appended
    Pillow raises nothing."""
    from cnnlab.data import decode_image

    whole = {"baseline": _jpeg(), "progressive": _jpeg(progressive=True), "grey": _jpeg("L"),
             "cmyk": _jpeg("CMYK")}[kind]
    cut = whole[:whole.rindex(b"\xff\xda") + 40] + b"\xff\xd9"
    with Image.open(io.BytesIO(cut)) as im:
        im.load()  # the silent case: Pillow decodes it
    assert decode_image(whole, "whole.jpg").shape[:2] == (32, 32)
    with pytest.raises(CnnlabError, match=r"^cut.jpg: its compressed data ends before its last block \(a cut or "
                                          r"damaged JPEG\)$"):
        decode_image(cut, "cut.jpg")
    write_folder(tmp_path / "d", per_class=3)
    (tmp_path / "d" / "cat" / "cut.jpg").write_bytes(cut)
    refused(r"cat/cut.jpg: its compressed data ends before its last block", str(tmp_path / "d"), holdout=1)
    assert load_dataset(str(tmp_path / "d"), holdout=1, skip_bad=True).notes == ["skipped 1 unreadable image"]


def test_jpeg_with_bytes_after_its_last_block_is_read():
    """Some cameras pad the data before the end marker; every block is there, so the image is read whole."""
    from cnnlab.data import decode_image

    whole = _jpeg()
    padded = whole[:-2] + bytes(10) + b"\xff\xd9"
    assert np.array_equal(decode_image(padded, "padded.jpg"), decode_image(whole, "whole.jpg"))


def test_damaged_compressed_tiff_is_one_line_with_libtiffs_reason(tmp_path, capfd):
    """libtiff writes its complaint to the process's stderr itself; it belongs in cnnlab's one line."""
    from cnnlab.cli import main

    tiff = bytearray(image_bytes((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8), "TIFF",
                                 compression="tiff_lzw"))
    tiff[8] ^= 0xFF  # the first byte of the LZW strip
    write_folder(tmp_path / "d", per_class=3)
    (tmp_path / "d" / "cat" / "bad.tif").write_bytes(bytes(tiff))
    assert main(["train", "--data", str(tmp_path / "d"), "--holdout", "1", "--model", "cnn", "--epochs", "1",
                 "-q", "--out", str(tmp_path / "run")]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1, err
    assert "cat/bad.tif: not a readable image (libtiff: Using code not yet in table)" in err


def test_unreadable_member_message_has_no_object_repr(tmp_path):
    members = class_members()
    members["a/zz.png"] = b"not an image at all"
    archive = write_tar(tmp_path / "x.tar", members)
    msg = refused(r"x.tar:a/zz.png: not a readable image", str(archive))
    assert "BytesIO" not in msg


# --- archives ----------------------------------------------------------------------------------------------

def _offsets(archive) -> list[int]:
    with tarfile.open(archive) as tar:
        return [m.offset for m in tar]


def _cut_at_member(data: bytes, archive) -> bytes:
    return data[:_offsets(archive)[9]]


def _bad_checksum(data: bytes, archive) -> bytes:
    at = _offsets(archive)[12] + 148  # the header's checksum field
    return data[:at] + b"9999999\0" + data[at + 8:]


def _cut_mid_member(data: bytes, archive) -> bytes:
    return data[:_offsets(archive)[9] + 600]


@pytest.mark.parametrize("damage", [_cut_at_member, _bad_checksum, _cut_mid_member])
def test_damaged_plain_tar_is_refused_not_read_short(tmp_path, damage):
    archive = write_tar(tmp_path / "x.tar", class_members())
    archive.write_bytes(damage(archive.read_bytes(), archive))
    refused(r"x.tar: ", str(archive), holdout=1)
    refused(r"x.tar: ", str(archive), holdout=1, skip_bad=True)


@pytest.mark.parametrize("where", [0.3, 0.5, 0.8])
def test_bit_flipped_or_cut_tar_gz_is_refused_even_with_skip_bad(tmp_path, where):
    archive = write_tar(tmp_path / "x.tar.gz", class_members(), "w:gz")
    data = bytearray(archive.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    archive.write_bytes(bytes(data))
    refused(r"x.tar.gz: ", str(archive), holdout=1, skip_bad=True)
    archive.write_bytes(archive.read_bytes()[:int(len(data) * where)])
    refused(r"x.tar.gz: ", str(archive), holdout=1, skip_bad=True)


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_whole_archives_of_each_compression_load(tmp_path, mode):
    archive = write_tar(tmp_path / ("x.tar" + {"w": "", "w:gz": ".gz", "w:bz2": ".bz2", "w:xz": ".xz"}[mode]),
                        class_members(), mode)
    ds = load_dataset(str(archive), holdout=2)
    assert ds.classes == ["a", "b", "c"] and len(ds.train_y) == 18


@pytest.mark.parametrize("content", [b"hello, not an archive\n" * 50, gzip.compress(b"x" * 5000), b""],
                         ids=["text", "gzip of no tar", "empty"])
def test_non_tar_archive_is_one_line(tmp_path, content):
    (tmp_path / "x.tar.gz").write_bytes(content)
    refused(r"x.tar.gz: not a readable tar archive", str(tmp_path / "x.tar.gz"))


def test_hidden_entries_are_skipped_in_folders(tmp_path):
    write_folder(tmp_path / "d", per_class=3)
    write_folder(tmp_path / "d", classes=(".hiddenclass", ".ipynb_checkpoints"), per_class=3)
    write_folder(tmp_path / "d" / "cat" / ".ipynb_checkpoints", classes=("x",), per_class=2)
    Image.new("RGB", (12, 12)).save(tmp_path / "d" / "cat" / ".x.png")
    ds = load_dataset(str(tmp_path / "d"), holdout=1)
    assert ds.classes == ["cat", "dog", "fox"] and np.bincount(ds.train_y).tolist() == [2, 2, 2]


def test_hidden_entries_and_dot_prefixes_in_archives(tmp_path):
    members = class_members(prefix="./")
    members.update({f".b/{i}.png": image_bytes(np.zeros((8, 8), np.uint8)) for i in range(5)})
    members.update({"./a/.x.png": image_bytes(np.zeros((8, 8), np.uint8)), ".hidden/z/0.png": b"x"})
    ds = load_dataset(str(write_tar(tmp_path / "x.tar.gz", members, "w:gz")), holdout=1)
    assert ds.classes == ["a", "b", "c"] and np.bincount(ds.train_y).tolist() == [7, 7, 7]


@pytest.mark.parametrize("name", ["../a/9.png", "/a/9.png", "a/../../9.png"])
def test_archive_members_that_climb_out_are_refused(tmp_path, name):
    members = class_members()
    members[name] = image_bytes(np.zeros((8, 8), np.uint8))
    refused(r"x.tar: member .* absolute path or '\.\.'", str(write_tar(tmp_path / "x.tar", members)))


@pytest.mark.parametrize("cap, match", [("CNNLAB_MAX_MEMBER_BYTES", r"a/0000.png.* over the limit"),
                                        ("CNNLAB_MAX_ARCHIVE_BYTES", r"over the limit")])
def test_archive_member_and_total_sizes_are_capped(tmp_path, monkeypatch, cap, match):
    archive = write_tar(tmp_path / "x.tar.gz", class_members(), "w:gz")
    size = len(class_members()["a/0000.png"])
    monkeypatch.setenv(cap, str(size - 1 if "MEMBER" in cap else size * 10))
    msg = refused(match, str(archive))
    assert cap in msg  # the message says how to raise the limit


def test_huge_declared_member_is_refused_before_reading(tmp_path):
    info = tarfile.TarInfo("a/0.png")
    info.size = 3 << 30  # 3 GiB declared, nothing behind it
    (tmp_path / "x.tar.gz").write_bytes(gzip.compress(info.tobuf() + b"\0" * 4096))
    refused(r"a/0.png.* 3.0 GiB.* over the limit", str(tmp_path / "x.tar.gz"))


def test_bad_cap_setting_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_MAX_MEMBER_BYTES", "lots")
    refused("CNNLAB_MAX_MEMBER_BYTES", str(write_tar(tmp_path / "x.tar", class_members())))


def _with_link(archive, name, target, kind=tarfile.SYMTYPE):
    write_tar(archive, class_members())
    with tarfile.open(archive, "a") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        tar.addfile(info)
    return str(archive)


def test_links_inside_an_archive_are_followed_and_links_out_refused(tmp_path):
    ds = load_dataset(_with_link(tmp_path / "s.tar", "a/link.png", "0001.png"), holdout=1)
    assert np.bincount(ds.train_y).tolist() == [8, 7, 7]
    ds = load_dataset(_with_link(tmp_path / "h.tar", "b/hard.png", "a/0001.png", tarfile.LNKTYPE), holdout=1)
    assert np.bincount(ds.train_y).tolist() == [7, 8, 7]
    refused(r"member 'a/link.png'.*absolute path", _with_link(tmp_path / "abs.tar", "a/link.png", "/etc/passwd"))
    refused(r"member 'a/link.png'.*outside", _with_link(tmp_path / "up.tar", "a/link.png", "../../x.png"))
    refused(r"a/link.png: a link to 'nothere.png'", _with_link(tmp_path / "gone.tar", "a/link.png", "nothere.png"))


@pytest.mark.parametrize("size, match", [(0, ">= 1"), (-3, ">= 1"), (2.5, "whole number"), (True, "whole number"),
                                         (100000, "over the limit")])
def test_bad_image_size_is_refused_before_decoding(tmp_path, size, match):
    write_folder(tmp_path / "d", per_class=3)
    refused(f"--image-size.*{match}", str(tmp_path / "d"), holdout=1, image_size=size)


def test_decoded_images_are_capped(tmp_path, monkeypatch):
    write_folder(tmp_path / "d", per_class=3)
    monkeypatch.setenv("CNNLAB_MAX_DECODED_BYTES", "1000")
    refused(r"d: 9 images at 64x64 is .* over the limit .*CNNLAB_MAX_DECODED_BYTES", str(tmp_path / "d"), holdout=1,
            image_size=64)
    refused(r"d: the images decoded so far .*CNNLAB_MAX_DECODED_BYTES", str(tmp_path / "d"), holdout=1)


def test_symlinked_class_folder_is_followed(tmp_path):
    write_folder(tmp_path / "d", per_class=3)
    write_folder(tmp_path / "elsewhere", classes=("emu",), per_class=3)
    (tmp_path / "d" / "emu").symlink_to(tmp_path / "elsewhere" / "emu")
    (tmp_path / "d" / "cat" / "loop").symlink_to(tmp_path / "d")  # a cycle is not walked forever
    ds = load_dataset(str(tmp_path / "d"), holdout=1)
    assert ds.classes == ["cat", "dog", "emu", "fox"] and len(ds.train_y) == 8


def test_a_link_to_a_folder_that_holds_the_data_is_not_walked(tmp_path):
    write_folder(tmp_path / "d", per_class=3)
    (tmp_path / "d" / "cat" / "root").symlink_to("/")  # walking it would read the whole file system
    (tmp_path / "d" / "cat" / "up").symlink_to(tmp_path)
    ds = load_dataset(str(tmp_path / "d"), holdout=1)
    assert ds.classes == ["cat", "dog", "fox"] and len(ds.train_y) == 6
    write_folder(tmp_path / "e", per_class=3)
    (tmp_path / "e" / "zroot").symlink_to("/")  # as a class folder it holds no images of its own
    refused(r"e/zroot: class folder holds no images", str(tmp_path / "e"), holdout=1)


@pytest.mark.parametrize("link", ["loop", "folder", "device"])
def test_links_in_an_archive_to_a_loop_a_folder_or_a_device_are_one_line(tmp_path, link):
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in class_members(classes=("cat", "dog"), per_class=2).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        links = {"loop": [("cat/a.png", "b.png"), ("cat/b.png", "a.png")], "folder": [("cat/a.png", "../dog")],
                 "device": [("cat/a.png", "dev")]}[link]
        if link == "folder":
            folder = tarfile.TarInfo("dog")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
        if link == "device":
            device = tarfile.TarInfo("cat/dev")
            device.type = tarfile.CHRTYPE
            tar.addfile(device)
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    refused(r"cat/a.png: a link to '.*', (which is not an image file|in a loop of links)", str(archive),
            holdout=1)


@pytest.mark.skipif(sys.platform != "linux", reason="a folder name that is not UTF-8 needs a Linux file system")
def test_a_class_folder_whose_name_is_not_utf8_is_refused_before_training(tmp_path):
    write_folder(tmp_path / "d", per_class=3)
    (tmp_path / "d" / "cat").rename(os.fsdecode(bytes(tmp_path / "d") + b"/\xffcat"))
    refused(r"class folder '\\xffcat'.* not UTF-8", str(tmp_path / "d"), holdout=1)


def test_empty_data_argument_is_refused(tmp_path, monkeypatch):
    write_folder(tmp_path, per_class=3)
    monkeypatch.chdir(tmp_path)  # the current folder is a valid data set: '' must still not mean it
    for spec in ("", "  "):
        refused("--data is empty", spec)


# --- holdout and trainability ------------------------------------------------------------------------------

@pytest.mark.parametrize("holdout", [0, 0.0, -1, -0.2, 2.5, float("nan"), float("inf"), 1.5, True, "0.2"])
def test_bad_holdout_is_refused(tmp_path, holdout):
    write_folder(tmp_path / "d", per_class=6)
    refused("--holdout", str(tmp_path / "d"), holdout=holdout)
    with pytest.raises(CnnlabError, match="--holdout"):
        check_holdout(holdout)


@pytest.mark.parametrize("holdout, per_class", [(0.5, 3), (1, 1), (2.0, 2), (3, 3)])
def test_good_holdout(holdout, per_class):
    assert check_holdout(holdout) == holdout
    if holdout >= 1:
        assert isinstance(check_holdout(holdout), int) and check_holdout(holdout) == per_class


def test_holdout_fraction_that_holds_out_nothing_is_refused(tmp_path):
    write_folder(tmp_path / "d", per_class=3)
    refused("no test images", str(tmp_path / "d"), holdout=0.1)


def _ds(train_y, test_y, classes=("a", "b")):
    x = np.zeros((len(train_y), 4, 4, 1), np.uint8)
    return ImageDataset("t", list(classes), x, np.array(train_y), x[:len(test_y)], np.array(test_y))


@pytest.mark.parametrize("train_y, test_y, classes, match", [
    ([0, 0, 0], [0], ("a",), "only one class"),
    ([0, 0, 1], [0, 1], ("a", "b"), "class 'b' has 1 training image"),
    ([0, 0, 0, 0], [0, 1], ("a", "b"), "class 'b' has 0 training images"),
    ([0, 0, 1, 1], [], ("a", "b"), "no test images"),
])
def test_check_trainable_refuses(train_y, test_y, classes, match):
    with pytest.raises(CnnlabError, match=match):
        check_trainable(_ds(train_y, test_y, classes))


def test_check_trainable_passes_a_good_set(tmp_path):
    check_trainable(_ds([0, 0, 1, 1], [0, 1]))
    write_folder(tmp_path / "one", classes=("cat",), per_class=4)
    with pytest.raises(CnnlabError, match="only one class"):
        check_trainable(load_dataset(str(tmp_path / "one"), holdout=1))


# --- CIFAR and MNIST ---------------------------------------------------------------------------------------

def _cifar_batch(tmp_path, batch: dict):
    write_cifar10(tmp_path, n_train=4, n_test=2)
    with open(tmp_path / "data_batch_2", "wb") as f:
        pickle.dump(batch, f, protocol=2)


@pytest.mark.parametrize("batch, match", [
    ({b"data": np.full((4, 3072), 999, np.int64), b"labels": [0, 1, 2, 3]}, r"data_batch_2: pixel values.*999"),
    ({b"data": np.full((4, 3072), -1, np.int64), b"labels": [0, 1, 2, 3]}, r"data_batch_2: pixel values.*-1"),
    ({b"data": np.full((4, 3072), 0.5), b"labels": [0, 1, 2, 3]}, r"data_batch_2: .*float64"),
    ({b"data": [["x"] * 3072] * 4, b"labels": [0, 1, 2, 3]}, r"data_batch_2: "),
    ({b"data": "abc", b"labels": [0, 1, 2, 3]}, r"data_batch_2: "),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": ["0", "1", "2", "3"]}, r"data_batch_2: labels"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": "abcd"}, r"data_batch_2: labels"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0.5, 1, 2, 3]}, r"data_batch_2: labels"),
    ({b"labels": [0, 1, 2, 3]}, r"data_batch_2: "),
])
def test_malformed_cifar_batches(tmp_path, batch, match):
    _cifar_batch(tmp_path, batch)
    refused(match, str(tmp_path))


def test_cifar_meta_without_label_names(tmp_path):
    write_cifar10(tmp_path, n_train=4, n_test=2)
    with open(tmp_path / "batches.meta", "wb") as f:
        pickle.dump({b"names": [b"a"]}, f, protocol=2)
    refused(r"batches.meta: no label_names", str(tmp_path))


def test_cifar_batch_cannot_amplify_one_row(tmp_path):
    """A small pickle whose data list repeats one row: refused before a large array is built."""
    row = np.zeros(3072, np.uint8)
    _cifar_batch(tmp_path, {b"data": [row] * 20000, b"labels": [0] * 20000})
    assert (tmp_path / "data_batch_2").stat().st_size < 200_000
    refused(r"data_batch_2: .*20000 rows", str(tmp_path))


def _mnist(tmp_path, raw: bytes):
    write_mnist(tmp_path, gz=False, n=5)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw)


@pytest.mark.parametrize("raw, match", [
    (bytes([0, 0, 8, 3]) + struct.pack(">3i", -5, 28, 28) + bytes(100), "dimension"),
    (bytes([0, 0, 8, 3]) + struct.pack(">3i", -5, -28, 28) + bytes(5 * 28 * 28), "dimension"),
    (bytes([0, 0, 8, 3]) + struct.pack(">1i", 5), "header"),
    (bytes([0, 0, 8, 3]) + struct.pack(">3i", 2**31 - 1, 2**31 - 1, 2**31 - 1) + bytes(10), "header says"),
], ids=["negative", "two negatives", "short header", "huge"])
def test_malformed_mnist_headers(tmp_path, raw, match):
    _mnist(tmp_path, raw)
    refused(rf"train-images-idx3-ubyte: .*{match}", str(tmp_path))


def test_mnist_without_training_images(tmp_path):
    write_mnist(tmp_path, gz=True, n=5)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((0, 28, 28), np.uint8))))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(0, np.uint8))))
    refused(r"no training images", str(tmp_path))


def test_mnist_gz_that_is_damaged(tmp_path):
    write_mnist(tmp_path, gz=True, n=5)
    f = tmp_path / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-30])
    refused(r"t10k-images-idx3-ubyte.gz: ", str(tmp_path))


# --- progress ----------------------------------------------------------------------------------------------

def test_first_decode_of_many_files_shows_a_bar_on_a_terminal(tmp_path, monkeypatch):
    from cnnlab.data import folder

    class Tty(io.StringIO):
        def isatty(self):
            return True

    write_folder(tmp_path / "d", per_class=4)
    monkeypatch.setattr(folder, "PROGRESS_MIN_FILES", 10)
    monkeypatch.setattr(sys, "stderr", Tty())
    load_dataset(str(tmp_path / "d"), holdout=1)
    assert "decoding" in sys.stderr.getvalue() and "12/12" in sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: no bar
    load_dataset(str(tmp_path / "d"), holdout=2)
    assert sys.stderr.getvalue() == ""


# --- through the command line ------------------------------------------------------------------------------

def _cut_tar(p):
    archive = write_tar(p / "cut.tar", class_members())
    archive.write_bytes(archive.read_bytes()[:10240])


def _folder_with_bomb(p):
    write_folder(p / "d", per_class=3)
    (p / "d" / "cat" / "b.png").write_bytes(png_with_size(20000, 20000))


@pytest.mark.parametrize("make, options, culprit", [
    (_cut_tar, [], "cut.tar"),
    (lambda p: write_folder(p / "d", per_class=3), ["--holdout", "0"], "--holdout"),
    (lambda p: write_folder(p / "d", per_class=3), ["--holdout", "2.5"], "--holdout"),
    (_folder_with_bomb, [], "b.png: 400,000,000 pixels"),
    (_folder_with_bomb, ["--skip-bad", "--holdout", "1", "--image-size", "70000"], "--image-size"),
    (lambda p: None, [], "--data"),
])
def test_train_refuses_bad_data_in_one_line_with_exit_2(tmp_path, monkeypatch, capsys, make, options, culprit):
    from cnnlab.cli import main

    make(tmp_path)
    monkeypatch.chdir(tmp_path)
    data = next((f for f in ("cut.tar", "d") if (tmp_path / f).exists()), "")
    argv = ["train", "--data", data, "--epochs", "1", "--out", str(tmp_path / "run"), "-q", *options]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cnnlab: error:") and culprit in err, err
