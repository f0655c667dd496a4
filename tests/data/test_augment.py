"""Batched augmentation checked against a per-image NumPy reference."""
import numpy as np
import pytest
import torch

from cnnlab import CnnlabError
from cnnlab.data.augment import Augmenter, apply_flip, parse_policy, random_translate


def _batch(n=64, c=3, size=8):
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_translate_equals_a_reflect_padded_crop_of_each_image_and_covers_every_shift():
    x, pad = _batch(n=400), 2
    y = random_translate(x, pad, torch.Generator().manual_seed(0))
    assert y.dtype == torch.uint8 and y.shape == x.shape
    seen = set()
    for a, b in zip(x.numpy(), y.numpy()):
        padded = np.pad(a, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        shifts = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                  if (padded[:, dy:dy + 8, dx:dx + 8] == b).all()]
        assert shifts, "an output image is no crop of its padded input"
        seen.add(shifts[0])
    assert len(seen) == (2 * pad + 1) ** 2


def test_flip_mirrors_exactly_the_masked_images():
    x = _batch()
    mask = torch.arange(64) % 3 == 0
    y = apply_flip(x, mask)
    assert (y[mask] == x[mask].flip(3)).all() and (y[~mask] == x[~mask]).all()


def test_alternating_flip_shows_each_image_the_other_view_next_epoch():
    x, ids = _batch(), torch.arange(64)
    aug = Augmenter(parse_policy("altflip"), 64, seed=3)
    e0, e1, e2 = (aug(x, ids, e, 0) for e in range(3))
    flipped0 = (e0 != x).flatten(1).any(1)
    assert 10 < flipped0.sum() < 54
    assert ((e1 != x).flatten(1).any(1) == ~flipped0).all() and (e2 == e0).all()


def test_augmentation_is_reproducible_from_seed_epoch_and_step():
    x, ids = _batch(), torch.arange(64)
    a = Augmenter(parse_policy("flip,translate=2"), 64, seed=0)
    b = Augmenter(parse_policy("flip,translate=2"), 64, seed=0)
    assert (a(x, ids, 1, 5) == b(x, ids, 1, 5)).all() and not (a(x, ids, 1, 5) == a(x, ids, 1, 6)).all()
    assert Augmenter(parse_policy(""), 64, 0)(x, ids, 0, 0) is x


@pytest.mark.parametrize("spec, message", [("rotate", "unknown operation 'rotate'"),
                                            ("translate=x", "whole number"), ("flip,altflip", "one of flip")])
def test_bad_policies_are_named(spec, message):
    with pytest.raises(CnnlabError, match=message):
        parse_policy(spec)


def test_translate_larger_than_the_image_is_refused():
    with pytest.raises(CnnlabError, match="translate=8"):
        random_translate(_batch(), 8)
