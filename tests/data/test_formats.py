"""Each supported format, read from small files the tests write."""
import tarfile

import numpy as np
import pytest

from cnnlab import CnnlabError
from cnnlab.data import load_dataset
from cnnlab.data.cifar import _read_batch
from tests.data.writers import write_cifar10, write_cifar100, write_folder, write_mnist


def test_digits_split_is_fixed_and_stratified():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.train_x.shape == (1438, 8, 8, 1) and a.test_x.shape == (359, 8, 8, 1)
    assert a.train_x.dtype == np.uint8 and a.train_x.max() == 255
    np.testing.assert_array_equal(a.test_y, b.test_y)
    np.testing.assert_array_equal(a.test_x, b.test_x)
    counts = np.bincount(a.test_y)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of each class (174..183 images per class)
    assert a.default_image_size == 32


def test_cifar10_batches_decode_to_nhwc(tmp_path):
    data = write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_dataset(str(tmp_path))  # the parent folder works too
    assert ds.name == "cifar10" and ds.train_x.shape == (100, 32, 32, 3) and ds.test_x.shape == (10, 32, 32, 3)
    # row layout is R plane, G plane, B plane: pixel (0, 0) of image 0 is bytes 0, 1024, 2048
    assert list(ds.train_x[0, 0, 0]) == [data[0, 0], data[0, 1024], data[0, 2048]]
    assert ds.classes[3] == "c3"


def test_cifar100(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python")
    ds = load_dataset(str(tmp_path / "cifar-100-python"))
    assert ds.name == "cifar100" and ds.num_classes == 100 and ds.train_x.shape == (30, 32, 32, 3)


def test_cifar_label_out_of_range_names_the_file(tmp_path):
    write_cifar10(tmp_path, labels_max=10)
    with pytest.raises(CnnlabError, match=r"data_batch_\d: label 10 is out of range"):
        load_dataset(str(tmp_path))


def test_cifar_batches_never_unpickle_code(tmp_path):
    import pickle

    (tmp_path / "evil").write_bytes(pickle.dumps({"data": __import__("os").system}))
    with pytest.raises(CnnlabError, match="forbidden object"):
        _read_batch(tmp_path / "evil")


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    write_mnist(tmp_path / "fashion", gz=gz)
    ds = load_dataset(str(tmp_path / "fashion"))
    assert ds.train_x.shape == (30, 28, 28, 1) and ds.name == "fashion-mnist" and ds.classes[1] == "Trouser"


def test_mnist_truncated_and_bad_label(tmp_path):
    write_mnist(tmp_path / "a", gz=False, bad_label=True)
    with pytest.raises(CnnlabError, match="train-labels-idx1-ubyte: label 12 is out of range"):
        load_dataset(str(tmp_path / "a"))
    write_mnist(tmp_path / "b", gz=False)
    f = tmp_path / "b" / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CnnlabError, match="t10k-images-idx3-ubyte: truncated"):
        load_dataset(str(tmp_path / "b"))


def test_folder_with_train_and_test(tmp_path):
    write_folder(tmp_path / "pets", splits=("train", "test"))
    ds = load_dataset(str(tmp_path / "pets"))
    assert ds.classes == ["cat", "dog", "fox"]
    assert ds.train_x.shape == (18, 12, 12, 3) and ds.test_x.shape == (18, 12, 12, 3)


def test_folder_holds_out_the_last_images_per_class(tmp_path):
    write_folder(tmp_path / "pets", per_class=10)
    ds = load_dataset(str(tmp_path / "pets"), holdout=3)
    assert len(ds.train_y) == 21 and np.bincount(ds.test_y).tolist() == [3, 3, 3]
    whole = load_dataset(str(tmp_path / "pets"), holdout=0.5)
    assert np.bincount(whole.test_y).tolist() == [5, 5, 5]
    # the held-out images are the last files of each class: 0005.png .. 0009.png of "cat" come first
    from PIL import Image
    for i in range(5):
        np.testing.assert_array_equal(whole.test_x[i], np.asarray(Image.open(tmp_path / f"pets/cat/{i + 5:04d}.png")))


def test_grayscale_folder_keeps_one_channel(tmp_path):
    write_folder(tmp_path / "g", mode="L", splits=("train", "test"))
    assert load_dataset(str(tmp_path / "g")).channels == 1


def test_tar_gz_folder_reads_without_unpacking(tmp_path):
    write_folder(tmp_path / "src" / "pets" / "train", ext="jpg")
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "pets", arcname="pets")
    ds = load_dataset(str(archive), holdout=2)
    assert ds.classes == ["cat", "dog", "fox"] and ds.train_x.shape == (12, 12, 12, 3)


def test_bad_inputs_name_the_culprit(tmp_path):
    with pytest.raises(CnnlabError, match="nowhere: no such file or folder"):
        load_dataset(str(tmp_path / "nowhere"))
    write_folder(tmp_path / "empty")
    (tmp_path / "empty" / "zebra").mkdir()
    with pytest.raises(CnnlabError, match="zebra: class folder holds no images"):
        load_dataset(str(tmp_path / "empty"))


def test_truncated_and_non_image_files(tmp_path):
    write_folder(tmp_path / "t", ext="jpg")
    bad = tmp_path / "t" / "dog" / "0002.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(CnnlabError, match=r"dog/0002.jpg: not a readable image.*--skip-bad"):
        load_dataset(str(tmp_path / "t"))
    (tmp_path / "t" / "fox" / "0001.jpg").write_text("this is not an image")
    ds = load_dataset(str(tmp_path / "t"), skip_bad=True)
    assert ds.notes == ["skipped 2 unreadable images"] and len(ds.train_y) + len(ds.test_y) == 16


def test_mixed_sizes_need_a_resize_policy(tmp_path):
    write_folder(tmp_path / "m", size=12)
    write_folder(tmp_path / "m", classes=("emu",), size=16)
    with pytest.raises(CnnlabError, match=r"emu/0000.png is 16x16 but .* is 12x12; pass --image-size"):
        load_dataset(str(tmp_path / "m"))
    ds = load_dataset(str(tmp_path / "m"), image_size=10)
    assert ds.train_x.shape[1:] == (10, 10, 3)


def test_not_a_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CnnlabError, match="notes.txt: not a data set cnnlab can read"):
        load_dataset(str(tmp_path / "notes.txt"))


def test_every_image_format_predict_reads_also_trains(tmp_path):
    """A folder of TIFF images (which `predict` reads) is a data set like one of PNGs, pixel for pixel."""
    from PIL import Image

    write_folder(tmp_path / "png", per_class=4)
    for path in (tmp_path / "png").rglob("*.png"):
        target = tmp_path / "tif" / path.relative_to(tmp_path / "png").with_suffix(".tif")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).save(target)
    png, tif = load_dataset(str(tmp_path / "png"), holdout=1), load_dataset(str(tmp_path / "tif"), holdout=1)
    np.testing.assert_array_equal(png.train_x, tif.train_x)
    np.testing.assert_array_equal(png.test_y, tif.test_y)
