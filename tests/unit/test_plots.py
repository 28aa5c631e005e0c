"""Charts of a run hold for any configuration a reader tries, one epoch included."""
from __future__ import annotations

import pytest

from tinylm.plots import plot_loss_curves


def _history(epochs: int) -> list[dict]:
    return [{"epoch": e, "step": 10 * e, "train_loss": 6.0 - e, "val_loss": 5.5 - e,
             "val_by_lang": {"en": {"loss": 5.4 - e}, "es": {"loss": 5.6 - e}}} for e in range(1, epochs + 1)]


@pytest.mark.parametrize("epochs", [1, 3])
def test_every_loss_curve_shows_its_points_even_after_one_epoch(epochs):
    """A line needs two points to be seen; a one-epoch run's curves are single points, which
    show only as markers (the per-language curves were dashed lines alone: invisible)."""
    fig = plot_loss_curves({"history": _history(epochs)})
    lines = fig.axes[0].get_lines()
    assert {line.get_label() for line in lines} == {"training (epoch mean)", "validation",
                                                   "validation, en", "validation, es"}
    for line in lines:
        assert len(line.get_xdata()) == epochs
        assert line.get_marker() not in (None, "", " ", "None"), f"{line.get_label()} has no marker"
    low, high = fig.axes[0].get_xlim()
    assert high - low >= 2, "the epoch axis spans at least an epoch either side of a single point"
