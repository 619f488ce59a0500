"""Per-trial charts at any number of trials: above a few thousand marks, what reaches the browser is bounded.

A chart that draws one mark per trial (slices, history, parallel coordinates) sends a point per trial
and the browser draws each one: at 10,000 trials that is megabytes and seconds. Above ``POINTS_MAX``
trials slices and history draw the bulk as counts in bins (a density) and only the best trials as
marks; parallel coordinates draw ``LINES_MAX`` lines (``best_and_spread``: the best, then an even
spread over the rest by the metric). The payload is the same at 10,000 trials as at 2,000. Pure numpy/pandas, no plotly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

POINTS_MAX = 1500  # marks per chart (or per slice panel) drawn one by one; beyond, a density and the best
LINES_MAX = 500  # polylines of the static parallel coordinates (~0.3 s to draw 1,000 in a CPU-only browser)
BEST_MARKS = 100  # the best trials drawn as marks over a density
OTHER_MARKS = 200  # trials not scored (stopped early, failed, ...) drawn as marks beside a density
X_BINS, Y_BINS = 40, 25


def best_and_spread(frame: pd.DataFrame, col: str, limit: int, best: int, ascending: bool = False) -> pd.DataFrame:
    """At most ``limit`` rows of ``frame``: the ``best`` by ``col`` (largest unless ``ascending``), then rows
    evenly spaced in ``col`` order over the rest, so the spread of the metric is kept. All rows when few."""
    if len(frame) <= limit:
        return frame
    ordered = frame.sort_values(col, ascending=ascending, kind="stable", na_position="last")
    rest = ordered.iloc[best:]
    picks = np.unique(np.linspace(0, len(rest) - 1, max(limit - best, 0)).round().astype(int))
    return pd.concat([ordered.iloc[:best], rest.iloc[picks]])


@dataclass
class Density:
    """Counts of points in bins: ``z[y_bin, x_bin]`` (None where empty); ``x``/``y`` are the bin edges, or
    the categories for a categorical x."""

    x: list
    y: list
    z: list
    total: int


def _edges(values: np.ndarray, bins: int, log: bool) -> np.ndarray:
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if hi <= lo:
        lo, hi = (lo / 1.1, lo * 1.1) if log and lo > 0 else (lo - 0.5, hi + 0.5)
    return np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)


def density(x: pd.Series, y: pd.Series, log_x: bool = False, categorical: bool = False,
            x_bins: int = X_BINS, y_bins: int = Y_BINS) -> Density:
    """The points ``(x, y)`` counted in a grid: ``x_bins`` numeric bins (log-spaced when ``log_x``; one per
    distinct value when there are few integers) or one per category, by ``y_bins`` bins of ``y``."""
    ok = x.notna().to_numpy() & y.notna().to_numpy()
    yv = y.to_numpy(dtype=float)[ok]
    y_edges = _edges(yv, y_bins, False) if len(yv) else np.array([0.0, 1.0])
    yi = np.clip(np.searchsorted(y_edges, yv, side="right") - 1, 0, len(y_edges) - 2)
    if categorical:
        cats = sorted(x[ok].astype(str).unique())
        xi = pd.Categorical(x[ok].astype(str), categories=cats).codes
        x_out: list = cats
        n_x = len(cats)
    else:
        xv = x.to_numpy(dtype=float)[ok]
        distinct = np.unique(xv)
        if 0 < len(distinct) <= 30 and np.all(distinct == np.round(distinct)) and not log_x:  # one bin a value
            x_edges = np.r_[distinct[0] - 0.5, (distinct[:-1] + distinct[1:]) / 2, distinct[-1] + 0.5]
        else:
            x_edges = _edges(xv, x_bins, log_x) if len(xv) else np.array([0.0, 1.0])
        xi = np.clip(np.searchsorted(x_edges, xv, side="right") - 1, 0, len(x_edges) - 2)
        x_out, n_x = [float(e) for e in x_edges], len(x_edges) - 1
    counts = np.zeros((len(y_edges) - 1, max(n_x, 1)), dtype=np.int64)
    np.add.at(counts, (yi, xi), 1)
    z = [[int(v) if v else None for v in row] for row in counts]
    return Density(x_out, [float(e) for e in y_edges], z, int(ok.sum()))
