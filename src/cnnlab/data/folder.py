"""A folder of class subfolders of images, on disk or inside a tar archive, read without unpacking.

Layouts: `root/train/<class>/*` with an optional `root/test/<class>/*`, or `root/<class>/*`. Leading
folders with a single child (as archives often have) are skipped. Without a test split, the last
`holdout` images of each class (by file name) are held out as the test split. Hidden files and folders
(names starting with '.') are skipped; symlinked folders are followed (a cycle is walked once).

Archives (.tar, .tar.gz, .tar.bz2, .tar.xz; the compression is told by the bytes, not the name) are
decompressed in memory up to a cap and must be read to their end-of-archive blocks: a cut or damaged
archive is refused, never read short. A member whose path is absolute or holds '..' refuses the archive.

Pixels: 8-bit greyscale stays one channel, colour becomes RGB. 16-bit samples are scaled to 8 bits (the
high byte), 32-bit integer images are read as 16-bit samples, CMYK/YCbCr/LAB/HSV and palettes convert to
RGB. Transparent pixels (LA, RGBA, palettes or colours with a transparency key) are composited on white.
The EXIF orientation is applied. Images over Pillow's pixel limit are refused as decompression bombs.
"""
from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import re
import sys
import tarfile
import tempfile
import warnings
import zlib
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from ..errors import CnnlabError
from . import jpeg_scan, limits
from .dataset import ImageDataset, check_holdout, printable, reason
from .png_rows import CHECKED as PNG_CHECKED
from .png_rows import missing_rows_in

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ARCHIVE_EXTENSIONS = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
BACKGROUND = 255  # transparent pixels are composited on white
PROGRESS_MIN_FILES = 2000  # a first decode of at least this many images shows a bar (on a terminal)
_COMPRESSION = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_EXTENSIONS)


def walk_folder(path: Path) -> tuple[list[str], dict[str, Path]]:
    """(relative POSIX paths of the folders, {relative path: file} of the images), hidden entries skipped,
    symlinked folders followed unless they lead back to a folder above them or to one that holds the data
    folder (a link to '/' would walk the whole file system, the data set within it)."""
    folders: list[str] = []
    files: dict[str, Path] = {}
    root = os.path.realpath(path)
    holders = {root, *map(str, Path(root).parents)}  # the data folder and every folder that holds it
    above = {str(path): holders}  # each folder -> the real paths of it and its parents
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        chain = above.pop(dirpath)
        keep = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            if not d.startswith(".") and real not in chain:
                keep.append(d)
                above[os.path.join(dirpath, d)] = chain | {real}
        dirnames[:] = keep
        base = Path(dirpath)
        folders += [(base / d).relative_to(path).as_posix() for d in keep]
        for f in sorted(filenames):
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                files[(base / f).relative_to(path).as_posix()] = base / f
    return folders, files


def _member_name(archive: Path, member: tarfile.TarInfo) -> str | None:
    """The member's path with './' removed; None for hidden entries and non-images; refuses climbing paths."""
    path = PurePosixPath(member.name)
    if member.name.startswith("/") or ".." in path.parts:
        raise CnnlabError(f"{archive}: member '{printable(member.name)}' has an absolute path or '..'; an archive "
                          f"whose members climb out of its folder is refused")
    if member.issym() or member.islnk():
        try:
            tarfile.data_filter(member, "/archive")  # what extraction with filter="data" accepts
        except tarfile.FilterError as exc:  # a link that leads out of the archive's folder
            raise CnnlabError(f"{archive}: member '{printable(member.name)}': {printable(str(exc))}") from None
    if not path.parts or any(part.startswith(".") for part in path.parts):
        return None
    if path.suffix.lower() not in IMAGE_EXTENSIONS or not (member.isfile() or member.issym() or member.islnk()):
        return None
    return "/".join(path.parts)


def _decompressed(path: Path) -> io.BytesIO:
    """The whole tar stream in memory, decompressed up to the archive cap."""
    cap = limits.limit(limits.TOTAL)
    with open(path, "rb") as f:
        head = f.read(6)
    opener = next((o for magic, o in _COMPRESSION if head.startswith(magic)), None)
    if opener is None and path.stat().st_size > cap:
        raise limits.over(str(path), path.stat().st_size, limits.TOTAL)
    out = io.BytesIO()
    with (opener or open)(path, "rb") as f:
        while block := f.read(1 << 20):
            out.write(block)
            if out.tell() > cap:
                raise limits.over(f"{path} (decompressed)", out.tell(), limits.TOTAL)
    out.seek(0)
    return out


def _read_archive(path: Path) -> dict[str, bytes]:
    member_cap, total_cap = limits.limit(limits.MEMBER), limits.limit(limits.TOTAL)
    files: dict[str, bytes] = {}
    total = 0
    try:
        stream = _decompressed(path)
        with tarfile.open(fileobj=stream, mode="r:") as tar:
            for member in tar:
                name = _member_name(path, member)
                if name is None:
                    continue
                shown = f"{path}:{printable(member.name)}"
                if member.size > member_cap:  # before reading: a sparse member can claim gigabytes
                    raise limits.over(shown, member.size, limits.MEMBER)
                total += member.size
                if total > total_cap:
                    raise limits.over(f"{path}: the images read", total, limits.TOTAL)
                link = f"{shown}: a link to '{printable(member.linkname)}'"
                try:
                    reader = tar.extractfile(member)
                except KeyError:  # a link to a member the archive lacks
                    raise CnnlabError(f"{link}, which the archive lacks") from None
                except RecursionError:  # tarfile resolves links by recursion: a.png -> b.png -> a.png
                    raise CnnlabError(f"{link}, in a loop of links") from None
                if reader is None:  # a link to a folder, a device or a pipe
                    raise CnnlabError(f"{link}, which is not an image file")
                data = reader.read(member_cap + 1)
                if len(data) > member_cap:
                    raise limits.over(shown, len(data), limits.MEMBER)
                files[name] = data
            end = tar.offset
        stream.seek(end)
        tail = np.frombuffer(stream.read(), dtype=np.uint8)
    except CnnlabError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise CnnlabError(f"{path}: not a readable tar archive ({reason(exc)})") from None
    if len(tail) < tarfile.BLOCKSIZE or tail.any():  # the two zero blocks that end every complete archive
        where = "ends without its end-of-archive blocks" if not tail.any() else "has an unreadable header"
        raise CnnlabError(f"{path}: damaged or truncated tar archive: it {where} at byte {end} of the tar "
                          f"stream; refusing to read it short")
    return files


def _list_files(path: Path) -> dict[str, bytes | Path]:
    """Relative POSIX path -> bytes (archive member) or Path (file on disk), images only."""
    return _read_archive(path) if is_archive(path) else walk_folder(path)[1]


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _layout(path: Path, files: dict[str, bytes | Path]) -> dict[str, dict[str, list[str]]]:
    """{'train': {class: [relpaths]}, 'test': {...}}. Also sees empty class folders on disk."""
    parts = [PurePosixPath(f).parts for f in files]
    prefix: tuple[str, ...] = ()
    while parts and all(len(p) > len(prefix) + 2 for p in parts) and len({p[len(prefix)] for p in parts}) == 1:
        prefix += (parts[0][len(prefix)],)
    top = {p[len(prefix)] for p in parts}
    split_names = {"train", "test"} if {"train", "test"} <= top or top == {"train"} else set()
    tree: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for f, p in zip(files, parts):
        rest = p[len(prefix):]
        split, rest = (rest[0], rest[1:]) if split_names else ("train", rest)
        if split in ("train", "test") and len(rest) >= 2:
            tree[split][rest[0]].append(f)
    if path.is_dir():  # an empty class folder is a mistake worth naming
        base = path.joinpath(*prefix)
        for split in sorted(split_names) or [""]:
            d = base / split if split else base
            for cls in _class_dirs(d) if d.is_dir() else []:
                if cls.name not in tree[split or "train"]:
                    raise CnnlabError(f"{cls}: class folder holds no images")
    if not tree.get("train"):
        raise CnnlabError(f"{path}: no class folders of images found (expected <class>/<image>.png or "
                          f"train/<class>/...)")
    return tree


class _BadImage(Exception):
    pass


def _composite(im: Image.Image) -> np.ndarray:
    """An LA or RGBA image over the BACKGROUND grey level: (H, W) or (H, W, 3)."""
    pixels = np.asarray(im, dtype=np.float32)
    alpha = pixels[..., -1:] / 255.0
    out = np.rint(pixels[..., :-1] * alpha + BACKGROUND * (1.0 - alpha)).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def _to_uint8(im: Image.Image) -> np.ndarray:
    """(H, W) for greyscale, (H, W, 3) for colour; the mode rules are in the module docstring."""
    mode, transparent = im.mode, "transparency" in im.info
    if mode.startswith("I;16") or mode == "I":
        return (np.clip(np.asarray(im, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
    if mode in ("1", "L") and not transparent:
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if mode in ("LA", "La"):
        return _composite(im.convert("LA"))
    if mode == "L":  # with a transparency key
        return _composite(im.convert("RGBA"))[..., 0]
    if mode in ("RGBA", "RGBa", "PA") or (mode in ("P", "RGB") and transparent):
        return _composite(im.convert("RGBA"))
    if mode in ("RGB", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    if mode == "F":
        raise ValueError("32-bit floating-point pixels have no fixed range; save the image with 8 or 16 bits")
    raise ValueError(f"pixel mode {mode} is not supported")


# a side past JPEG's limit: under Pillow's pixel limit, a 1 x 80,000,000 PNG of a few bytes decodes (its
# missing rows as zeros) into gigabytes once converted and resized
MAX_SIDE = 65_535


@contextlib.contextmanager
def _c_stderr_kept(lines: list[str]):
    """What C code (libtiff) writes to the process's stderr meanwhile, appended to `lines` instead: its
    complaint about a damaged file goes into cnnlab's one-line message, not before it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as kept:
        os.dup2(kept.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            kept.seek(0)
            lines.extend(kept.read(1 << 16).decode(errors="replace").splitlines())


def _past_the_palette(im: Image.Image) -> str | None:
    """A palette image whose pixels use colours its palette lacks, which Pillow reads as black (the
    transparent index excepted: those pixels are see-through)."""
    if im.mode != "P":
        return None
    colours = len(im.getpalette() or []) // 3
    used = np.flatnonzero(np.bincount(np.asarray(im).ravel(), minlength=256)[colours:]) + colours
    transparent = im.info.get("transparency")
    if isinstance(transparent, int):  # (a PNG's tRNS may instead give each palette entry an alpha: bytes)
        used = used[used != transparent]
    if used.size:
        return f"its pixels use colour {used[0]} of a palette of {colours} colours (a damaged file)"
    return None


def _made_up_pixels(src: bytes | Path, image_format: str | None) -> str | None:
    """Why Pillow's pixels of a file it decoded without error are partly not the file's: a PNG whose data
    ends cleanly before its last row (read as black rows), a JPEG whose blocks stop early (read as grey)."""
    if image_format not in PNG_CHECKED and image_format not in jpeg_scan.FORMATS:
        return None
    with (io.BytesIO(src) if isinstance(src, bytes) else open(src, "rb")) as stream:
        if image_format in jpeg_scan.FORMATS:
            why = jpeg_scan.damaged_scan(stream.read(limits.limit(limits.MEMBER)))
            return why and f"its compressed data {why} (a cut or damaged JPEG)"
        short = missing_rows_in(stream, image_format, limits.limit(limits.MEMBER))
        return short and f"its image data {short} (a cut or damaged PNG)"


def decode_image(src: bytes | Path, name: str, size: int | None = None) -> np.ndarray:
    """One image file as uint8 (H, W) or (H, W, 3), upright, resized to size x size when given. Raises
    CnnlabError naming `name` for anything unreadable, including decompression bombs."""
    try:
        return _decode(name, src, size)
    except _BadImage as exc:
        raise CnnlabError(str(exc)) from None


def _decode(name: str, src: bytes | Path, size: int | None) -> np.ndarray:
    if isinstance(src, Path) and src.exists() and not src.is_file():  # opening a FIFO would wait forever
        raise _BadImage(f"{name}: not a regular file (a pipe, socket or device?)")
    libtiff: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
                if max(im.size) > MAX_SIDE:  # from the header, before a byte of it is decoded
                    raise _BadImage(f"{name}: {im.size[0]}x{im.size[1]:,} pixels, a side over {MAX_SIDE:,} (the "
                                    f"most a JPEG holds)")
                if im.format == "TIFF":
                    with _c_stderr_kept(libtiff):
                        im.load()
                else:
                    im.load()  # decodes now, so a truncated file fails here
                made_up = _made_up_pixels(src, im.format) or _past_the_palette(im)
                if made_up:
                    raise _BadImage(f"{name}: {made_up}")
                pixels = _to_uint8(ImageOps.exif_transpose(im))
        if size is not None and pixels.shape[:2] != (size, size):
            pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))
        return pixels
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise _BadImage(f"{name}: {count} is over the limit of {Image.MAX_IMAGE_PIXELS:,} "
                        f"(a decompression bomb?)") from None
    except FileNotFoundError:
        raise _BadImage(f"{name}: file not found (a broken link?)") from None
    except _BadImage:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes Pillow raise is the file's fault
        why = reason(exc)
        if libtiff:  # its own words rather than Pillow's "decoder error -2"
            why = "libtiff: " + printable(libtiff[-1].removeprefix("tempfile.tif: ").rstrip("."))[:200]
        if "cannot identify image file" in why:  # Pillow names the file object: <_io.BytesIO object at 0x..>
            why = "not an image format Pillow knows"
        raise _BadImage(f"{name}: not a readable image ({why})") from None


def check_image_size(image_size) -> None:
    """`--image-size`: None (keep the files' size) or a whole number of pixels whose square is within Pillow's
    limit on one image."""
    if image_size is None:
        return
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise CnnlabError(f"--image-size must be a whole number of pixels >= 1, got {image_size!r}")
    if image_size * image_size > Image.MAX_IMAGE_PIXELS:
        raise CnnlabError(f"--image-size {image_size}: {image_size * image_size:,} pixels per image is over the limit "
                          f"of {Image.MAX_IMAGE_PIXELS:,}")


def load_folder(path: Path, holdout: float = 0.2, image_size: int | None = None,
                skip_bad: bool = False) -> ImageDataset:
    """Decode every image. `holdout` is a fraction per class (<1) or a count per class (>=1)."""
    from tqdm import tqdm

    holdout = check_holdout(holdout)
    check_image_size(image_size)
    files = _list_files(path)
    tree = _layout(path, files)
    classes = sorted(tree["train"])
    for cls in classes:  # bytes that are not UTF-8 come as surrogates, which the reports cannot draw
        try:
            cls.encode("utf-8")
        except UnicodeEncodeError:
            shown = printable(cls.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
            raise CnnlabError(f"{path}: class folder '{shown}' has a name that is not UTF-8 text; rename it, "
                              f"since the class names label the reports") from None
    unknown = sorted(set(tree.get("test", {})) - set(classes))
    if unknown:
        raise CnnlabError(f"{path}: test class '{unknown[0]}' has no train folder")
    skipped = 0
    arrays: dict[str, list] = {"train": [], "test": []}
    count = sum(len(names) for split in tree.values() for names in split.values())
    decoded, cap = 0, limits.limit(limits.DECODED)
    if image_size and count * image_size * image_size * 3 > cap:  # before decoding anything
        raise limits.over(f"{path}: {count} images at {image_size}x{image_size}", count * image_size ** 2 * 3,
                          limits.DECODED)
    bar = tqdm(total=count, desc=f"decoding {path.name}", unit="img", file=sys.stderr,
               disable=count < PROGRESS_MIN_FILES or not sys.stderr.isatty())
    with bar:
        for split in ("train", "test"):
            for label, cls in enumerate(classes):
                for name in sorted(tree.get(split, {}).get(cls, [])):
                    display = str(files[name]) if isinstance(files[name], Path) else f"{path}:{name}"
                    display = printable(display)
                    try:
                        pixels = _decode(display, files[name], image_size)
                        decoded += pixels.nbytes
                        if decoded > cap:
                            raise limits.over(f"{path}: the images decoded so far", decoded, limits.DECODED)
                        arrays[split].append((pixels, label, display))
                    except _BadImage as exc:
                        if not skip_bad:
                            raise CnnlabError(f"{exc} (pass --skip-bad to skip such files)") from None
                        skipped += 1
                    bar.update()
    x_train, y_train = _stack(arrays["train"])
    if arrays["test"]:
        x_test, y_test = _stack(arrays["test"])
    else:
        x_train, y_train, x_test, y_test = _hold_out(x_train, y_train, holdout, path)
    notes = [f"skipped {skipped} unreadable image{'s' * (skipped != 1)}"] if skipped else []
    return ImageDataset(path.name.split(".")[0], classes, x_train, y_train, x_test, y_test, notes=notes,
                        held_out=not arrays["test"])


def _stack(items: list[tuple[np.ndarray, int, str]]) -> tuple[np.ndarray, np.ndarray]:
    if not items:
        raise CnnlabError("no readable images found")
    first_shape = items[0][0].shape[:2]
    for img, _, name in items:
        if img.shape[:2] != first_shape:
            raise CnnlabError(f"{name} is {img.shape[1]}x{img.shape[0]} but {items[0][2]} is "
                              f"{first_shape[1]}x{first_shape[0]}; pass --image-size N to resize all images")
    rgb = any(img.ndim == 3 for img, _, _ in items)
    imgs = [np.repeat(i[..., None], 3, axis=2) if rgb and i.ndim == 2 else (i if i.ndim == 3 else i[..., None])
            for i, _, _ in items]
    return np.stack(imgs), np.array([lab for _, lab, _ in items], dtype=np.int64)


def _hold_out(x: np.ndarray, y: np.ndarray, holdout: float | int, path: Path):
    """The last images of each class (in file-name order) become the test split."""
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n = holdout if isinstance(holdout, int) else int(round(len(idx) * holdout))
        if n >= len(idx):
            raise CnnlabError(f"{path}: holding out {n} images per class leaves none to train on "
                              f"(class {c} has {len(idx)})")
        test[idx[len(idx) - n:]] = True
    if not test.any():
        raise CnnlabError(f"{path}: --holdout {holdout} holds out no test images (the classes have "
                          f"{np.bincount(y).max()} images or fewer); hold out a count such as --holdout 1")
    return x[~test], y[~test], x[test], y[test]
