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


def test_a_run_that_ends_inside_an_epoch_is_drawn_where_it_was_evaluated():
    """epochs=1.6 evaluates after epoch 1 and at 1.6: the curves put the last point at 1.6, not
    at 2, when the metrics know the steps per epoch."""
    history = _history(2)
    history[-1]["step"] = 16  # 10 steps per epoch: 1.6 epochs
    fig = plot_loss_curves({"history": history, "data": {"steps_per_epoch": 10}})
    for line in fig.axes[0].get_lines():
        assert list(line.get_xdata()) == [1.0, 1.6]
