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


@pytest.mark.parametrize("spec, message", [("shear=3", "unknown operation 'shear=3'"), ("rotate", "a number"),
                                            ("translate=x", "whole number"), ("flip,altflip", "one of flip"),
                                            ("crop=1.5", "out of range"), ("rotate=10:wrap", "fill must be"),
                                            ("rotate=inf", "finite"), ("rotate=nan", "finite"),
                                            ("brightness=inf", "finite"), ("color=nan", "finite"),
                                            ("crop=nan", "finite"), ("mixup=inf", "finite"),
                                            # finite, but past any meaning: black images, overflow, no end
                                            ("rotate=1e308", "out of range"), ("color=1e300", "out of range"),
                                            ("brightness=1.5", "out of range"), ("mixup=1e39", "out of range"),
                                            ("cutmix=1e300", "out of range"), ("randaugment=99999:9", "N from 0"),
                                            # a setting given twice: the later would silently win
                                            ("translate=4,translate=2", "sets translate a second time"),
                                            ("color=0.4,brightness=0.1", "sets brightness a second time")])
def test_bad_policies_are_named(spec, message):
    with pytest.raises(CnnlabError, match=message):
        parse_policy(spec)


def test_translate_larger_than_the_image_is_refused():
    with pytest.raises(CnnlabError, match="translate=8"):
        random_translate(_batch(), 8)


# -- the transforms behind crop, rotate, colour, cutout and mixing -------------------------------------------
from cnnlab.data.transforms import _rotate_hue, affine, colour, cutout, mix, random_affine_theta  # noqa: E402


def test_affine_identity_and_quarter_turn_are_exact():
    x = _batch(n=4, size=8).float()
    eye = torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(4, 2, 3)
    assert torch.allclose(affine(x, eye), x, atol=1e-3)
    quarter = torch.tensor([[0.0, -1, 0], [1, 0, 0]]).expand(4, 2, 3)  # output (u, v) reads input (-v, u)
    turned = affine(x, quarter)
    assert torch.allclose(turned, torch.rot90(x, 1, (2, 3)), atol=1e-3) or \
        torch.allclose(turned, torch.rot90(x, -1, (2, 3)), atol=1e-3)


def test_resized_crop_stays_inside_and_full_scale_is_identity():
    g = torch.Generator().manual_seed(0)
    theta = random_affine_theta(500, g, scale=(0.1, 1.0))
    half_w, half_h = theta[:, 0, 0].abs(), theta[:, 1, 1].abs()
    assert ((theta[:, 0, 2].abs() + half_w) <= 1 + 1e-6).all() and ((theta[:, 1, 2].abs() + half_h) <= 1 + 1e-6).all()
    area = half_w * half_h
    assert area.min() > 0.05 and area.max() <= 1
    full = random_affine_theta(3, g, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(full, torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(3, 2, 3), atol=1e-6)


def test_colour_scales_each_image_by_its_own_factor_and_leaves_gray_alone():
    x = _batch(n=16, size=8).float().clamp(20, 160)  # no clipping at 255 for factors up to 1.5
    out = colour(x, torch.Generator().manual_seed(0), brightness=0.5)
    ratio = out / x
    per_image = ratio.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-4)  # one factor per image
    assert per_image[:, 0].min() >= 0.5 - 1e-6 and per_image[:, 0].max() <= 1.5 + 1e-6
    assert per_image[:, 0].std() > 0.05  # independent draws
    gray = x[:, :1].expand(-1, 3, -1, -1)
    assert torch.allclose(colour(gray, torch.Generator().manual_seed(1), saturation=1.0, hue=0.5), gray, atol=1e-3)
    assert torch.allclose(_rotate_hue(x, torch.full((16,), 2 * torch.pi)), x, atol=1e-3)


def test_cutout_blanks_one_square_per_image():
    x = torch.full((32, 3, 16, 16), 200.0)
    x[:, :, ::2] = 10.0  # stripes, so the batch mean differs from every pixel
    out = cutout(x, 4, torch.Generator().manual_seed(0))
    changed = (out != x).any(1).flatten(1).sum(1)
    assert changed.max() == 16 and changed.min() >= 4  # a full 4x4 square, or its part inside the image


def test_mixup_blends_and_cutmix_pastes_as_much_as_the_label_weight_says():
    x = _batch(n=64, size=16).float()
    out, partner, own = mix(x, torch.Generator().manual_seed(0), mixup=0.4)
    expected = own.view(-1, 1, 1, 1) * x + (1 - own.view(-1, 1, 1, 1)) * x[partner]
    assert torch.allclose(out, expected, atol=1e-4) and 0 <= own.min() and own.max() <= 1
    out, partner, own = mix(x, torch.Generator().manual_seed(0), cutmix=1.0)
    from_partner = ((out == x[partner]) & (out != x)).all(1).flatten(1).float().mean(1)
    differs = (x != x[partner]).all(1).flatten(1).float().mean(1) > 0.99
    assert torch.allclose(from_partner[differs], 1 - own[differs], atol=0.02)


def test_augment_command_writes_a_grid_of_originals_and_draws(tmp_path, capsys):
    from PIL import Image

    from cnnlab.cli import main

    out = tmp_path / "grid.png"
    assert main(["augment", "--policy", "crop=0.5,rotate=20:reflect,color=0.3,cutout=6,mixup=0.3",
                 "--out", str(out), "--rows", "3", "--cols", "5"]) == 0
    image = Image.open(out)
    from cnnlab.report.augment_grid import GAP, MARGIN
    assert image.size[0] >= MARGIN + 5 * (96 + GAP) and image.size[1] > 3 * 96  # digits at 32x32, 3x per cell
    assert main(["augment", "--policy", "spin=3", "--out", str(tmp_path / "bad.png")]) == 2
    assert "unknown operation 'spin=3'" in capsys.readouterr().err and not (tmp_path / "bad.png").exists()


def test_randaugment_and_trivialaugment_draw_an_operation_per_image():
    from cnnlab.data.transforms import auto_augment

    assert parse_policy("randaugment").auto == "rand" and parse_policy("randaugment=3:14").auto_ops == 3
    for bad in ("randaugment=2", "randaugment=2:40", "randaugment=²:3", "trivialaugment=1", "randaugment,trivialaugment"):
        with pytest.raises(CnnlabError):
            parse_policy(bad)
    x = _batch(n=390, size=16).float()
    out = auto_augment(x, torch.Generator().manual_seed(0), "trivial")
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    unchanged = ((out - x).abs().flatten(1).amax(1) < 1e-3).float().mean()
    assert 0.02 < unchanged < 0.3  # about 1 in 13 draw "identity"; the rest change
    again = auto_augment(x, torch.Generator().manual_seed(0), "trivial")
    assert torch.equal(out, again)
    two = auto_augment(x, torch.Generator().manual_seed(0), "rand", num_ops=2, magnitude=0.5)
    assert ((two - x).abs().flatten(1).amax(1) < 1e-3).float().mean() < unchanged


def test_normalize_leaves_a_float_batch_untouched():
    from cnnlab.runtime.tensors import normalize

    x = torch.full((2, 3, 4, 4), 255.0)
    out = normalize(x, torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1))
    assert x.max() == 255.0 and out.max() == 1.0  # augmented (float) batches may be reused by the caller
