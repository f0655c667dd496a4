"""The rotation study's accuracy.png: no bar under the legend, labelled axes with units, a line at chance."""
from cnnlab.studies.rotation import accuracy_figure, plot

RESULTS = {label: {"accuracy": dict(zip(("0", "90", "180", "270", "random"), acc))} for label, acc in (
    ("plain CNN (z2cnn)", (0.98, 0.19, 0.34, 0.17, 0.35)),
    ("plain CNN + rotation augmentation", (0.93, 0.91, 0.92, 0.90, 0.92)),
    ("P4 CNN (p4cnn), no augmentation", (0.97, 0.97, 0.97, 0.97, 0.80)))}


def test_legend_hides_no_bar_and_axes_say_what_they_measure(tmp_path):
    fig = accuracy_figure(RESULTS, chance=0.1)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    bars = [p.get_window_extent() for p in ax.patches]
    assert len(bars) == 15 and not any(legend.overlaps(b) for b in bars)
    assert "(%)" in ax.get_ylabel() and "degrees" in ax.get_xlabel()
    assert any(list(line.get_ydata()) == [0.1, 0.1] for line in ax.lines)  # chance, for 10 classes
    assert "chance (10%)" in [t.get_text() for t in ax.get_legend().get_texts()]
    plot(RESULTS, tmp_path / "accuracy.png")
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
