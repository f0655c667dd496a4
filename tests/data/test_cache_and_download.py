"""The decoded-array cache, and downloads against a local HTTP server serving an archive the test makes."""
import http.server
import shutil
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cnnlab import CnnlabError
from cnnlab.data import REMOTE, cache, fetch, load_dataset
from cnnlab.data.download import download, md5sum
from tests.data.writers import write_cifar10, write_folder

SHARED_CIFAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-train-jpeg.tar.gz"


def test_cache_is_memory_mapped_and_complete(tmp_path):
    write_folder(tmp_path / "pets", splits=("train", "test"))
    first = load_dataset(str(tmp_path / "pets"))
    second = load_dataset(str(tmp_path / "pets"))
    assert isinstance(second.train_x, np.memmap)
    np.testing.assert_array_equal(first.train_x, second.train_x)
    entries = list(cache.cache_root().iterdir())
    assert len(entries) == 1 and (entries[0] / "meta.json").exists()


def test_failed_decode_leaves_no_cache_entry(tmp_path):
    write_folder(tmp_path / "pets")
    (tmp_path / "pets" / "cat" / "0003.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(CnnlabError):
        load_dataset(str(tmp_path / "pets"))
    root = cache.cache_root()
    assert not root.exists() or not any(root.iterdir())


def test_write_interrupted_mid_entry_leaves_no_entry(tmp_path, monkeypatch, capsys):
    write_folder(tmp_path / "pets", splits=("train", "test"))
    real_save, calls = np.save, []

    def failing_save(path, arr):  # the disk fills up after the first two arrays
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_save(path, arr)

    monkeypatch.setattr(cache.np, "save", failing_save)
    assert load_dataset(str(tmp_path / "pets")).train_x.shape == (18, 12, 12, 3)  # the run goes on, uncached
    assert "No space left on device" in capsys.readouterr().err
    assert list(cache.cache_root().iterdir()) == []  # neither an entry nor its temporary folder
    monkeypatch.setattr(cache.np, "save", real_save)
    assert load_dataset(str(tmp_path / "pets")).train_x.shape == (18, 12, 12, 3)
    assert len(list(cache.cache_root().iterdir())) == 1


def test_changed_folder_is_decoded_again(tmp_path):
    write_folder(tmp_path / "pets")
    a = load_dataset(str(tmp_path / "pets"), holdout=1)
    time.sleep(0.01)
    write_folder(tmp_path / "pets", classes=("emu",))
    b = load_dataset(str(tmp_path / "pets"), holdout=1)
    assert a.num_classes == 3 and b.num_classes == 4


@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="../shared/data/cifar10-train-jpeg.tar.gz is absent")
def test_second_load_of_cifar10_jpeg_is_10x_faster():
    t0 = time.perf_counter()
    first = load_dataset(str(SHARED_CIFAR))
    t1 = time.perf_counter()
    second = load_dataset(str(SHARED_CIFAR))
    t2 = time.perf_counter()
    assert first.train_x.shape == (40000, 32, 32, 3) and second.test_x.shape == (10000, 32, 32, 3)
    assert np.bincount(second.test_y).tolist() == [1000] * 10  # the last 1,000 of each class
    assert (t1 - t0) >= 10 * (t2 - t1), f"first {t1 - t0:.2f}s, second {t2 - t1:.3f}s"


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support and can cut a response short, like a dropped connection."""
    cut_after: int | None = None
    trickle: float = 0.0  # seconds between 64-byte pieces: a server that sends, but too slowly ever to finish
    ranges: list = []

    def do_GET(self):
        path = Path(self.directory) / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        start = 0
        if (rng := self.headers.get("Range")):
            start = int(rng.split("=")[1].split("-")[0])
            type(self).ranges.append(start)
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        chunk = body[start:]
        if type(self).cut_after is not None:
            chunk, type(self).cut_after = chunk[: type(self).cut_after], None
        if type(self).trickle:
            for i in range(0, len(chunk), 64):
                try:
                    self.wfile.write(chunk[i:i + 64])
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return
                time.sleep(type(self).trickle)
            return
        self.wfile.write(chunk)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    _RangeHandler.ranges, _RangeHandler.cut_after, _RangeHandler.trickle = [], None, 0.0
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_verifies_and_resumes(server, tmp_path):
    root, url = server
    payload = np.random.default_rng(0).bytes(300_000)
    (root / "blob.bin").write_bytes(payload)
    (tmp_path / "blob.ref").write_bytes(payload)
    md5 = md5sum(tmp_path / "blob.ref")
    dest = tmp_path / "dl" / "blob.bin"
    _RangeHandler.cut_after = 100_000  # the first attempt breaks off a third of the way in
    with pytest.raises(CnnlabError, match="run again to resume"):
        download(f"{url}/blob.bin", dest, md5, timeout=5)
    assert not dest.exists() and (dest.parent / "blob.bin.part").stat().st_size == 100_000
    download(f"{url}/blob.bin", dest, md5, timeout=5)
    assert _RangeHandler.ranges == [100_000] and dest.read_bytes() == payload
    assert not (dest.parent / "blob.bin.part").exists()


def test_corrupt_download_is_removed(server, tmp_path):
    root, url = server
    (root / "blob.bin").write_bytes(b"x" * 1000)
    dest = tmp_path / "blob.bin"
    with pytest.raises(CnnlabError, match="is corrupt: MD5"):
        download(f"{url}/blob.bin", dest, "0" * 32)
    assert not dest.exists() and not (tmp_path / "blob.bin.part").exists()
    with pytest.raises(CnnlabError, match="HTTP 404"):
        download(f"{url}/missing.bin", dest)


def test_a_download_larger_than_the_cap_is_stopped_and_removed(server, tmp_path, monkeypatch):
    """A server that sends without end would fill the disk; the cap stands in for it with a small file."""
    root, url = server
    (root / "blob.bin").write_bytes(b"x" * (3 << 20))
    monkeypatch.setenv("CNNLAB_MAX_DOWNLOAD_BYTES", str(1 << 20))
    with pytest.raises(CnnlabError, match=r"blob\.bin: over 1 MiB \(CNNLAB_MAX_DOWNLOAD_BYTES\)"):
        download(f"{url}/blob.bin", tmp_path / "dl" / "blob.bin", "0" * 32)
    assert list((tmp_path / "dl").iterdir()) == []


def test_a_download_that_trickles_is_stopped_and_kept_to_resume(server, tmp_path):
    """640 bytes a second never time out a read, and would take hours for a data set: stopped after the
    first window of `timeout` seconds under 1 KiB/s, the bytes kept for the next try."""
    root, url = server
    (root / "blob.bin").write_bytes(b"x" * 200_000)
    _RangeHandler.trickle = 0.1
    t0 = time.monotonic()
    with pytest.raises(CnnlabError, match=r"blob\.bin: under 1 KiB/s .*run again to resume"):
        download(f"{url}/blob.bin", tmp_path / "dl" / "blob.bin", "0" * 32, timeout=1)
    assert time.monotonic() - t0 < 10
    assert 0 < (tmp_path / "dl" / "blob.bin.part").stat().st_size < 200_000


def test_download_flag_fetches_a_registered_dataset(server, tmp_path, monkeypatch):
    root, url = server
    write_cifar10(tmp_path / "build" / "cifar-10-batches-py")
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setenv("CNNLAB_MIRROR", url)
    monkeypatch.setitem(REMOTE, "cifar10", ([(REMOTE["cifar10"][0][0][0], md5sum(root / "cifar-10-python.tar.gz"))],
                                            "cifar-10-batches-py"))
    with pytest.raises(CnnlabError, match="add --download"):
        load_dataset("cifar10")
    ds = load_dataset("cifar10", download=True)
    assert ds.name == "cifar10" and ds.train_x.shape == (100, 32, 32, 3)
    shutil.rmtree(root)  # already there: no second download
    assert fetch("cifar10").name == "cifar-10-batches-py"
