"""`cnnlab augment`: rows named, the originals set apart by a rule, mixed images captioned with their labels'
weights in the loss."""
import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.report.augment_grid import MARGIN, RULE_COLOUR, augment_views


def test_mixed_images_carry_their_label_weights():
    views, captions = augment_views("digits", "cutmix=1,mixup=0.4", rows=3, cols=6, seed=1)
    assert views.shape[:2] == (3, 6)
    assert all(c.isdigit() for c in captions[0])  # the originals: their class
    for caption in captions[1][:] + captions[2]:
        weights = [float(line.split(": ")[1]) for line in caption.splitlines()]
        assert abs(sum(weights) - 1) < 0.011 and 1 <= len(weights) <= 2
    assert any("\n" in c for c in captions[1] + captions[2])  # some image does carry two labels
    _, plain = augment_views("digits", "flip", rows=2, cols=3)
    assert plain[1] == ["", "", ""]  # nothing mixed: the label is the original's


def test_grid_names_its_rows_and_sets_the_originals_apart(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["augment", "--policy", "flip,cutmix=1", "--rows", "3", "--cols", "4", "--out", str(out)]) == 0
    assert "2 rows augmented" in capsys.readouterr().out
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    rule = np.all(np.abs(image - RULE_COLOUR) < 30, axis=2).mean(axis=1) > 0.9  # rows of pixels that are the rule
    assert rule.sum() >= 1
    rule_y = int(np.argmax(rule))
    ink = (image[:, :MARGIN - 4] < 128).all(axis=2).any(axis=1)  # dark text in the left margin
    above, below = ink[:rule_y], ink[rule_y:]
    assert above.any() and below.any()  # 'original' above the rule, 'draw N' below it


@pytest.mark.parametrize("options, message", [
    (["--seed", "-1"], "--seed must be between 0 and 2^32-1, got -1"),
    (["--seed", "99999999999999999999"], "--seed must be between 0 and 2^32-1"),
    (["--image-size", "-5"], "--image-size must be from 1 to 1024 pixels for a grid, got -5"),
    (["--image-size", "0"], "--image-size must be from 1 to 1024 pixels for a grid, got 0"),
    (["--image-size", "100000"], "--image-size must be from 1 to 1024"),
    (["--rows", "1000000000"], "--rows must be from 2 to 64 and --cols from 1 to 64"),
    (["--cols", "100000000000"], "--rows must be from 2 to 64 and --cols from 1 to 64"),
])
def test_a_grid_option_past_its_range_is_one_line(tmp_path, capsys, options, message):
    assert main(["augment", "--policy", "flip", *options, "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not list(tmp_path.iterdir())
