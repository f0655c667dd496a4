"""Data: every source becomes an `ImageDataset` of uint8 arrays. `load_dataset` picks the reader."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

from ..errors import CnnlabError
from ..text import did_you_mean
from .cache import cached
from .cifar import is_cifar_dir, load_cifar
from .dataset import (ImageDataset, check_holdout, check_trainable, refuse_ignored_holdout, stratified_split,
                      validate)
from .digits import load_digits
from .download import download
from .folder import decode_image, is_archive, load_folder
from .mnist import is_mnist_dir, load_mnist

_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # the mirror torchvision uses; LeCun's site is flaky
# name -> (archive or file URLs with MD5, folder the files end up in)
REMOTE = {
    "cifar10": ([("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")],
                "cifar-10-batches-py"),
    "cifar100": ([("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")],
                 "cifar-100-python"),
    "mnist": ([(_MNIST_URL + "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
               (_MNIST_URL + "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
               (_MNIST_URL + "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
               (_MNIST_URL + "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")], "mnist"),
    "fashion-mnist": ([(_FASHION_URL + "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                       (_FASHION_URL + "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
                       (_FASHION_URL + "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                       (_FASHION_URL + "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")],
                      "fashion-mnist"),
}
DATASETS = ["digits", *REMOTE]


def data_root() -> Path:
    """Where registered data sets are downloaded: $CNNLAB_DATA, or ~/.cache/cnnlab/datasets."""
    return Path(os.environ.get("CNNLAB_DATA") or Path.home() / ".cache" / "cnnlab" / "datasets").expanduser()


def fetch(name: str, root: Path | None = None) -> Path:
    """Download (or find already downloaded) a registered data set; returns the folder to read.
    `CNNLAB_MIRROR` replaces the host part of every address (for a local mirror)."""
    urls, folder = REMOTE[name]
    root = Path(root or data_root())
    target = root / folder
    mirror = os.environ.get("CNNLAB_MIRROR")
    for url, md5 in urls:
        if mirror:
            url = mirror.rstrip("/") + "/" + url.rsplit("/", 1)[1]
        file = download(url, (root if url.endswith(".tar.gz") else target) / url.rsplit("/", 1)[1], md5)
        if file.name.endswith(".tar.gz") and not target.exists():
            _extract(file, root, target)
    return target


def _extract(archive: Path, root: Path, target: Path) -> None:
    tmp = root / f".{target.name}.extracting"
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(tmp, filter="data")  # the "data" filter refuses absolute paths and links outside
    inner = tmp / target.name
    os.replace(inner if inner.exists() else tmp, target)


def data_location(spec: str) -> str:
    """`--data` as `load_dataset` reads it from the current folder: a registered name as it is, a path made
    absolute, so that a run folder's record of its data means the same from whichever folder it is read."""
    if not isinstance(spec, str) or not spec.strip() or spec in DATASETS:
        return spec
    return os.path.abspath(os.path.expanduser(spec))


def load_dataset(spec: str, *, download: bool = False, holdout: float = 0.2, image_size: int | None = None,
                 skip_bad: bool = False) -> ImageDataset:
    """A registered name (`digits`, `cifar10`, `cifar100`, `mnist`, `fashion-mnist`) or a path to CIFAR
    python batches, MNIST IDX files, or a folder (or tar archive) of class subfolders of images. `holdout` is
    checked by `check_holdout` whatever the source. Every loader's arrays pass `validate`."""
    if not isinstance(spec, str) or not spec.strip():
        raise CnnlabError("--data is empty: give a registered name (" + ", ".join(DATASETS) + ") or a path")
    holdout = check_holdout(holdout)
    if spec == "digits":
        return load_digits()
    if spec in REMOTE:
        path = data_root() / REMOTE[spec][1]
        if download:
            path = fetch(spec)
        elif not path.exists():
            raise CnnlabError(f"data set '{spec}' is not at {path}; add --download to fetch it, "
                              f"or pass its folder as --data PATH")
        name = spec
    else:
        path = Path(spec).expanduser()
        name = None
        if not path.exists():
            known = ", ".join(DATASETS)
            raise CnnlabError(f"--data {spec}: no such file or folder{did_you_mean(spec, DATASETS)} (registered "
                              f"names: {known})")
    for inner in ("cifar-10-batches-py", "cifar-100-python"):
        if (path / inner).is_dir():
            path = path / inner
    if path.is_dir() and is_cifar_dir(path):
        return validate(load_cifar(path), str(path))
    if path.is_dir() and is_mnist_dir(path):
        return validate(load_mnist(path, name), str(path))
    if path.is_dir() or is_archive(path):
        options = {"holdout": holdout, "image_size": image_size, "skip_bad": skip_bad}
        return cached(path, lambda: load_folder(path, holdout, image_size, skip_bad), **options)
    raise CnnlabError(f"--data {spec}: not a data set cnnlab can read (a folder or tar archive of class "
                      f"folders of images, CIFAR python batches or MNIST IDX files)")


__all__ = ["DATASETS", "ImageDataset", "check_holdout", "check_trainable", "data_location", "decode_image",
           "download", "fetch", "load_dataset", "refuse_ignored_holdout", "stratified_split", "validate"]
