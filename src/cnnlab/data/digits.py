"""The embedded default: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), no download."""
from __future__ import annotations

import numpy as np

from .dataset import ImageDataset, stratified_split

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed, so every run and every user sees the same test set
MODEL_SIZE = 32  # models see the digits upscaled to 32x32, a size every CIFAR-style model accepts


def load_digits() -> ImageDataset:
    from sklearn.datasets import load_digits as sk_load  # imported late: scikit-learn is slow to import

    bunch = sk_load()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 ink -> 0..255
    labels = bunch.target.astype(np.int64)
    train, test = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    return ImageDataset("digits", [str(i) for i in range(10)], images[train], labels[train], images[test],
                        labels[test], default_image_size=MODEL_SIZE)
