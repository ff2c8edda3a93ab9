"""Explanation figures: draw from arrays, on given axes or a new figure, reject bad shapes."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from structattn.report.explain_figures import plot_curves, plot_map, plot_method_maps, plot_score_bars


def test_side_by_side_grid_has_one_row_per_point_and_a_column_per_method():
    rng = np.random.default_rng(0)
    img = rng.random((3, 16, 16))
    maps = {"attention": rng.random((3, 16, 16)), "shap": rng.normal(size=(3, 16, 16))}
    fig = plot_method_maps(img, maps, masks=img > 0.7, row_labels=[1, 2, 3])
    assert len(fig.axes) == 3 * 3
    assert fig.axes[1].get_title() == "attention"
    with pytest.raises(ValueError, match="maps_by_method"):
        plot_method_maps(img, {"x": img[:2]})


def test_plots_draw_on_a_given_ax():
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_curves([0, 0.5, 1], {"ig": [1, 0.3, 0], "random": [1, 0.6, 0]}, ax=ax) is fig
    assert len(ax.lines) == 2
    fig2 = plot_score_bars({"V+": {"attention": 0.8, "shap": 0.7}}, metric="AUROC", reference=0.5)
    assert len(fig2.axes[0].patches) == 2
    with pytest.raises(ValueError, match="attribution"):
        plot_map(np.zeros(4))
