"""The cache: stale data ruled out, damaged entries rebuilt, unusable cache folders survived, leftovers cleaned."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import cache, load_dataset
from tests.data.writers import class_members, write_folder, write_tar


def _bmp_folder(root):
    """BMP files: the same size whatever the pixels, so a rewrite keeps the size."""
    for k, c in enumerate(("a", "b")):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4), 10 * k + i, np.uint8)).save(root / c / f"{i}.bmp")


def _copy_p(new, old):  # cp -p of a file with the same mtime: rewritten in place (same inode), mtime copied
    st = os.stat(old)
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    shutil.copy2(new, old)


def _restore_mtime(new, old):
    st = os.stat(old)
    old.write_bytes(new.read_bytes())
    os.utime(old, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("rewrite", [_copy_p, _restore_mtime])
def test_changed_file_with_same_size_and_mtime_is_not_served_stale(tmp_path, rewrite):
    _bmp_folder(tmp_path / "d")
    before = load_dataset(str(tmp_path / "d"), holdout=1)
    assert before.train_x[0, 0, 0, 0] == 0
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(tmp_path / "new.bmp")
    target = tmp_path / "d" / "a" / "0.bmp"
    mtime, size = target.stat().st_mtime_ns, target.stat().st_size
    rewrite(tmp_path / "new.bmp", target)
    assert (target.stat().st_mtime_ns, target.stat().st_size) == (mtime, size)
    assert load_dataset(str(tmp_path / "d"), holdout=1).train_x[0, 0, 0, 0] == 200


def test_rewritten_archive_with_restored_mtime_is_not_served_stale(tmp_path):
    archive = write_tar(tmp_path / "x.tar", class_members())
    st = archive.stat()
    first = load_dataset(str(archive), holdout=1)
    members = class_members()
    members["a/0000.png"], members["a/0001.png"] = members["a/0001.png"], members["a/0000.png"]
    write_tar(archive, members)
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert archive.stat().st_size == st.st_size
    second = load_dataset(str(archive), holdout=1)
    assert first.train_x[0, 0, 0, 0] == 0 and second.train_x[0, 0, 0, 0] == 1


def _entry():
    (entry,) = [p for p in cache.cache_root().iterdir() if not p.name.startswith(".")]
    return entry


def _save(name, array):
    return lambda e: np.save(e / name, array)


DAMAGE = {
    "random bytes": lambda e: (e / "train_x.npy").write_bytes(os.urandom(300)),
    "truncated npy": lambda e: (e / "test_x.npy").write_bytes((e / "test_x.npy").read_bytes()[:-40]),
    "bad meta": lambda e: (e / "meta.json").write_text("{not json"),
    "empty meta": lambda e: (e / "meta.json").write_text(""),
    "meta a list": lambda e: (e / "meta.json").write_text("[1, 2]"),
    "meta without classes": lambda e: (e / "meta.json").write_text(json.dumps({"name": "d"})),
    "length mismatch": _save("train_y", np.zeros(3, np.int64)),
    "labels out of range": _save("train_y", np.full(15, 7, np.int64)),
    "negative labels": _save("test_y", np.full(3, -1, np.int64)),
    "float pixels": _save("train_x", np.zeros((15, 12, 12, 3))),
    "pickled object array": _save("train_x", np.array([None] * 15, dtype=object)),
    "missing array": lambda e: (e / "test_y.npy").unlink(),
    "a pixel byte changed": lambda e: _change_last_byte(e / "train_x.npy"),
    "a label changed": lambda e: _save("test_y", (np.load(e / "test_y.npy") + 1) % 3)(e),
    "classes reordered in meta": lambda e: _edit_meta(e, classes=["dog", "cat", "fox"]),
    "another data set's entry": lambda e: _replace_with_another_entry(e),
    "an array that is a link": lambda e: _link_to_copy(e / "train_x.npy"),
}


def _change_last_byte(path):
    """The last byte of the file changed (a pixel's lowest bit), the file still a valid array of its shape."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def _edit_meta(entry, **changes):
    meta = json.loads((entry / "meta.json").read_text())
    (entry / "meta.json").write_text(json.dumps({**meta, **changes}))


def _replace_with_another_entry(entry):
    """The entry's files replaced by those of a data set of the same shapes under other class names."""
    other = entry.parent.parent / "other"
    write_folder(other, classes=("ant", "bee", "elk"), per_class=6)
    load_dataset(str(other), holdout=1)
    (other_entry,) = [p for p in entry.parent.iterdir() if not p.name.startswith(".") and p != entry]
    for f in other_entry.iterdir():
        shutil.copy(f, entry / f.name)


def _link_to_copy(path):
    """The array replaced by a link to a copy of itself elsewhere: cnnlab never writes links into an entry."""
    copy = path.parent.parent / f"{path.parent.name}-{path.name}"
    shutil.copy(path, copy)
    path.unlink()
    path.symlink_to(copy)


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_cache_entry_is_rebuilt_with_a_warning(tmp_path, capsys, damage):
    write_folder(tmp_path / "d", per_class=6)
    fresh = load_dataset(str(tmp_path / "d"), holdout=1)
    DAMAGE[damage](_entry())
    capsys.readouterr()
    again = load_dataset(str(tmp_path / "d"), holdout=1)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning" in err and "rebuilt" in err, err
    for k in ("train_x", "train_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(fresh, k), getattr(again, k))
    assert isinstance(load_dataset(str(tmp_path / "d"), holdout=1).train_x, np.memmap)  # and it is cached again


def test_cache_that_is_a_file_or_unwritable_falls_back_with_a_warning(tmp_path, monkeypatch, capsys):
    write_folder(tmp_path / "d", per_class=3)
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "file"))
    ds = load_dataset(str(tmp_path / "d"), holdout=1)
    err = capsys.readouterr().err
    assert len(ds.train_y) == 6 and err.count("\n") == 1 and "without the cache" in err, err
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "ro"))

    def no_permission(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache.tempfile, "mkdtemp", no_permission)
    assert len(load_dataset(str(tmp_path / "d"), holdout=1).train_y) == 6
    assert "Permission denied" in capsys.readouterr().err


def test_empty_cache_variable_means_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CNNLAB_CACHE", "")
    monkeypatch.setenv("CNNLAB_DATA", "")
    from cnnlab.data import data_root
    assert cache.cache_root() == tmp_path / ".cache" / "cnnlab" / "arrays"
    assert data_root() == tmp_path / ".cache" / "cnnlab" / "datasets"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temporary_folders_of_dead_writers_are_cleaned(tmp_path):
    root = cache.cache_root()
    host = socket.gethostname()
    dead = root / f".0123456789abcdef0123.{host}.{_dead_pid()}.k2j_4x9q.tmp"
    alive = root / f".0123456789abcdef0123.{host}.{os.getpid()}.k2j_4x9q.tmp"
    other_host = root / f".0123456789abcdef0123.elsewhere-{host}.{_dead_pid()}.k2j_4x9q.tmp"
    for d in (dead, alive, other_host):
        d.mkdir(parents=True)
        (d / "train_x.npy").write_bytes(b"0" * 1000)
    write_folder(tmp_path / "d", per_class=3)
    load_dataset(str(tmp_path / "d"), holdout=1)
    assert not dead.exists() and alive.exists() and other_host.exists()


def test_cache_list_and_clear(tmp_path, capsys):
    write_folder(tmp_path / "d", per_class=3)
    assert main(["cache", "list"]) == 0
    assert "no cache entries" in capsys.readouterr().out
    load_dataset(str(tmp_path / "d"), holdout=1)
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "d") in out and str(cache.cache_root()) in out and "9 images" in out
    assert main(["cache", "clear"]) == 0
    assert "removed 1 entry" in capsys.readouterr().out
    assert not [p for p in cache.cache_root().iterdir()]
    assert main(["cache", "list"]) == 0 and "no cache entries" in capsys.readouterr().out


def test_cache_clear_removes_only_folders_named_as_cnnlab_names_them(tmp_path, capsys):
    """Folders of the user's, hidden ones and links (to anywhere) in the cache folder are not the cache's."""
    root = cache.cache_root()
    root.mkdir(parents=True, exist_ok=True)
    for name in ("my_photos", ".hidden"):
        (root / name).mkdir()
        (root / name / "a.txt").write_text("precious")
    (tmp_path / "outside" / "sub").mkdir(parents=True)
    (tmp_path / "outside" / "sub" / "d.txt").write_text("keep")
    (root / "0123456789abcdef0123").symlink_to(tmp_path / "outside")  # a link named like an entry
    (root / "fedcba9876543210fedc").mkdir()  # an entry of cnnlab's, damaged: nothing in it
    assert main(["cache", "clear"]) == 0
    assert "removed 1 entry (0 bytes)" in capsys.readouterr().out
    assert sorted(p.name for p in root.iterdir()) == [".hidden", "0123456789abcdef0123", "my_photos"]
    assert (tmp_path / "outside" / "sub" / "d.txt").read_text() == "keep"


def test_a_pipe_or_a_huge_meta_json_is_a_damaged_entry_never_waited_on_or_read_whole(tmp_path, capsys):
    def expire(*_):
        raise TimeoutError("waited on a pipe")

    write_folder(tmp_path / "d", per_class=3)
    load_dataset(str(tmp_path / "d"), holdout=1)
    entry = next(cache.cache_root().iterdir())
    (entry / "meta.json").unlink()
    os.mkfifo(entry / "meta.json")
    signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    try:
        assert main(["cache", "list"]) == 0
        assert "damaged (meta.json is missing, a link or not a regular file)" in capsys.readouterr().out
        assert load_dataset(str(tmp_path / "d"), holdout=1).train_x.shape[0] == 6  # rebuilt
        err = capsys.readouterr().err
        assert "is damaged (meta.json is missing, a link or not a regular file); it is rebuilt" in err
    finally:
        signal.alarm(0)
    os.truncate(entry / "meta.json", 1 << 32)  # sparse: no disk
    assert main(["cache", "list"]) == 0
    assert "meta.json: over 16 MiB" in capsys.readouterr().out
