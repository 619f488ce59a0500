"""Pure figure functions: frames (from ``dashboards.queries``) in, plotly figures out.

No store access and no Dash here, so each chart is testable on a hand-made frame.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from hybridlt.dashboards import dense
from hybridlt.dashboards.queries import ClassMatrix
from hybridlt.sweep.metrics import ACCURACY_METRICS, METRICS

_AXIS = {"gridcolor": "#EBF0F8", "linecolor": "#EBF0F8", "zerolinecolor": "#EBF0F8", "automargin": True}
# plotly_white's look in a few keys: the full template costs ~9 ms a figure and ~10 KB of JSON each
TEMPLATE = go.layout.Template(layout={"paper_bgcolor": "white", "plot_bgcolor": "white", "font": {"color": "#2a3f5f"},
                                      "colorway": qualitative.Plotly, "xaxis": _AXIS, "yaxis": _AXIS,
                                      "hoverlabel": {"align": "left"}})
TRIAL_COLORS = qualitative.Plotly + qualitative.D3
GROUP_COLORS = {"many": "#1f77b4", "medium": "#ff9f1c", "few": "#d62728", "all": "#7f7f7f"}
METRIC_LABELS = {m: ("accuracy" if m == "acc" else f"{METRICS[m].label}{'' if m == 'balanced_acc' else '-shot'} "
                     "accuracy") for m in ACCURACY_METRICS}


def label(column: str) -> str:
    """A column's name for people: ``param.loss.temperature`` -> ``loss.temperature``."""
    return column.removeprefix("param.")


def trial_colors(trial_ids: list[str]) -> dict[str, str]:
    """One colour per selected trial, the same in every chart."""
    return {t: TRIAL_COLORS[i % len(TRIAL_COLORS)] for i, t in enumerate(trial_ids)}


def _layout(fig: go.Figure, title: str, height: int = 380, **kw) -> go.Figure:
    kw.setdefault("margin", {"l": 60, "r": 20, "t": 50, "b": 45})
    # uirevision: a refresh while a sweep runs keeps the reader's zoom and hidden traces
    fig.update_layout(template=TEMPLATE, title={"text": title, "x": 0.01, "font": {"size": 15}}, height=height,
                      uirevision="keep", **kw)
    return fig


def empty_figure(message: str, height: int = 260) -> go.Figure:
    """A blank chart that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font={"size": 14, "color": "#555"}, xref="paper",
                       yref="paper", x=0.5, y=0.5)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "", height)


def _is_log(values: pd.Series) -> bool:
    """Positive values spanning more than a factor of 20 read better on a log axis."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return len(v) > 1 and v.min() > 0 and v.max() / v.min() > 20


def is_numeric(values: pd.Series) -> bool:
    """Numbers (not booleans): drawn on a numeric axis; anything else is a category."""
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


# ---- per-class ----------------------------------------------------------------------------------
def _rank_text(lo: np.ndarray, hi: np.ndarray, names: list[str] | None) -> list[str]:
    if names is not None:
        return [f"rank {a}: class {n}" for a, n in zip(lo, names, strict=True)]
    return [f"ranks {a}–{b}" for a, b in zip(lo, hi, strict=True)]


def class_heatmap_figure(m: ClassMatrix, selected: list[str], metric: str, total_trials: int) -> go.Figure:
    """Training count per class rank (top) over a trials x class-rank heatmap of per-class accuracy."""
    if not m.trial_ids:
        return empty_figure("no per-class rows yet")
    x = (m.lo + m.hi) / 2
    text = _rank_text(m.lo, m.hi, m.names)
    rows = [("▶ " if t in selected else "") + t for t in m.trial_ids]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.2, 0.8], vertical_spacing=0.03)
    fig.add_trace(go.Bar(x=x, y=m.counts, width=(m.hi - m.lo + 1) * 0.9, marker_color="#6c8ebf",
                         hovertext=text, hovertemplate="%{hovertext}<br>training count %{y:.0f}<extra></extra>",
                         showlegend=False), row=1, col=1)
    where = "class rank %{x}" if m.names is not None else "class ranks around %{x:.0f}"
    percent = np.where(np.isnan(m.acc), np.nan, np.round(100 * np.nan_to_num(m.acc)))  # 1 byte a cell below
    z = percent.astype(np.uint8) if not np.isnan(percent).any() else percent.astype(np.float32)
    fig.add_trace(go.Heatmap(z=z, x=x, y=rows, zmin=0, zmax=100, colorscale="Viridis",
                             colorbar={"title": {"text": "acc %"}, "len": 0.75, "y": 0.38},
                             hovertemplate=f"trial %{{y}}<br>{where}<br>accuracy %{{z}}%<extra></extra>"),
                  row=2, col=1)
    fig.update_yaxes(type="log", dtick=1, title_text="train count", row=1, col=1)
    fig.update_yaxes(autorange="reversed", showticklabels=len(rows) <= 60, ticks="", row=2, col=1)
    binned = "" if m.names is not None else f", {len(m.lo)} rank bins"
    fig.update_xaxes(title_text=f"class rank by training count (0 = most images; {m.n_classes} classes{binned})",
                     row=2, col=1)
    shown = f"{len(rows)} of {total_trials} groups" if len(rows) < total_trials else f"{len(rows)} groups"
    height = 420 + min(len(rows), 60) * 6
    return _layout(fig, f"Per-class accuracy (mean over seeds): {shown}, best {METRIC_LABELS.get(metric, metric)} "
                        "first",
                   height)


def class_rank_figure(curves: pd.DataFrame, colors: dict[str, str], thresholds_x: list[tuple[float, str]],
                      binned: bool) -> go.Figure:
    """Per-class accuracy against class rank, one line per selected trial, group boundaries marked."""
    if curves.empty:
        return empty_figure("select trials in the table (no per-class rows for them)")
    fig = go.Figure()
    for t, rows in curves.groupby("trial_id", sort=False):
        text = [f"ranks {a}–{b}, count ≈ {c:.0f}" for a, b, c in zip(rows.rank_lo, rows.rank_hi, rows.train_count,
                                                                    strict=True)]
        fig.add_trace(go.Scatter(x=rows["rank"], y=100 * rows["accuracy"], name=t,
                                 mode="lines+markers" if len(rows) <= 60 else "lines",
                                 line={"color": colors.get(t)}, hovertext=text,
                                 hovertemplate=f"{t}<br>%{{hovertext}}<br>accuracy %{{y:.1f}}%<extra></extra>"))
    for x, name in thresholds_x:
        fig.add_vline(x=x, line_dash="dot", line_color="#999", annotation_text=name, annotation_position="top")
    kind = "mean per rank bin" if binned else "per class"
    fig.update_xaxes(title_text="class rank by training count (0 = most images)")
    fig.update_yaxes(title_text=f"accuracy % ({kind})", range=[-2, 102])
    return _layout(fig, "Per-class accuracy vs class rank (selected groups, mean over seeds)", 420,
                   legend={"orientation": "h", "y": -0.2})


# ---- what drives accuracy -------------------------------------------------------------------------
def _dimension(values: pd.Series, name: str) -> dict:
    """One parallel-coordinates axis: categories as codes, wide positive ranges in log10, missing as 'n/a'."""
    if not is_numeric(values):
        cats = sorted(values.dropna().astype(str).unique())
        codes = values.map(lambda v: -1 if pd.isna(v) else cats.index(str(v)))
        ticks = ([-1] if values.isna().any() else []) + list(range(len(cats)))
        texts = (["n/a"] if values.isna().any() else []) + cats
        return {"label": name, "values": codes, "tickvals": ticks, "ticktext": texts,
                "range": [min(ticks) - 0.2, max(ticks) + 0.2]}
    v = values.astype(float)
    log = _is_log(v)
    shown = np.log10(v) if log else v
    lo, hi = float(shown.min()), float(shown.max())
    span = (hi - lo) or 1.0
    distinct = np.unique(v.dropna())
    integral = not log and len(distinct) <= 10 and np.all(distinct == np.round(distinct))
    ticks = [float(t) for t in distinct] if integral else list(np.linspace(lo, hi, 5))
    texts = [f"{10 ** t:.3g}" if log else f"{t:.3g}" for t in ticks]
    missing = lo - 0.25 * span
    if v.isna().any():
        ticks, texts = [missing, *ticks], ["n/a", *texts]
    return {"label": name + (" (log)" if log else ""), "values": shown.fillna(missing), "tickvals": ticks,
            "ticktext": texts, "range": [missing if v.isna().any() else lo, hi]}


def _parallel_dims(rows: pd.DataFrame, params: list[str], col: str, metric: str) -> list[dict]:
    dims = [_dimension(rows[p], label(p)) for p in params]
    lo, hi = float(rows[col].min()), float(rows[col].max())
    ticks = list(np.linspace(lo, hi, 5))
    dims.append({"label": f"{metric} %", "values": rows[col], "range": [lo, hi], "tickvals": ticks,
                 "ticktext": [f"{t:.3g}" for t in ticks]})
    return dims


def parallel_figure(trials: pd.DataFrame, params: list[str], metric: str, interactive: bool = False,
                    note: str = "") -> go.Figure:
    """Parallel coordinates: each parameter, then the objective (the colour), best trials drawn on top.

    The default draws SVG lines (fast everywhere); ``interactive`` is plotly's WebGL ``Parcoords``
    with brushing on the axes, which costs ~1.5 s to draw in a browser without a GPU.
    """
    col = f"final_{metric}"
    rows = trials[trials[col].notna()].sort_values(col, kind="stable").reset_index(drop=True)
    if rows.empty or not params:
        return empty_figure("no parameters vary, or no trial reported " + metric)
    dims = _parallel_dims(rows, params, col, metric)
    drawn = f"{len(rows):,} trials"
    if interactive:
        fig = go.Figure(go.Parcoords(line={"color": rows[col], "colorscale": "Viridis", "showscale": True,
                                           "colorbar": {"title": {"text": metric}}}, dimensions=dims,
                                     labelangle=-12, labelfont={"size": 12}))
    else:
        if len(rows) > dense.LINES_MAX:  # the axes' ranges stay those of every trial
            keep = np.sort(dense.best_and_spread(rows, col, dense.LINES_MAX, dense.LINES_MAX // 4).index)
            dims = [{**d, "values": np.asarray(d["values"])[keep]} for d in dims]
            drawn = (f"{len(keep):,} of {len(rows):,} trials drawn: the best {dense.LINES_MAX // 4} and an even "
                     "spread of the rest by the metric; 'interactive' draws all")
            rows = rows.iloc[keep]
        fig = _parallel_lines(rows, dims, col, metric)
    title = f"Parameters vs {METRIC_LABELS.get(metric, metric)} % ({drawn})<br><sup>{note}</sup>"
    return _layout(fig, title, 420, margin={"l": 70, "r": 40, "t": 90, "b": 30})


def _normalised(d: dict) -> np.ndarray:
    lo, hi = d["range"]
    values = np.asarray(d["values"], dtype=float)
    return (values - lo) / (hi - lo) if hi > lo else np.full(len(values), 0.5)


def _parallel_lines(rows: pd.DataFrame, dims: list[dict], col: str, metric: str, bins: int = 10) -> go.Figure:
    """Static parallel coordinates: one polyline per trial, in ``bins`` colour groups of the objective.

    Hovering a vertex names its trial (above 200 lines, a vertex on the objective's axis: the names are sent
    once, not at every vertex); ticks are one text trace (cheaper to draw than annotations).
    """
    k = len(dims)
    named = len(rows) <= 200
    ys = np.column_stack([_normalised(d) for d in dims])
    group = np.minimum((ys[:, -1] * bins).astype(int), bins - 1)
    ids = rows["trial_id"].astype(str).to_numpy()
    opacity = 0.7 if len(rows) <= 200 else 0.35  # many lines: the ticks must still read through them
    fig = go.Figure()
    for b in np.unique(group):
        part = ys[group == b]
        y = np.column_stack([part, np.full(len(part), np.nan)]).ravel().astype(np.float32)
        x = np.tile(np.r_[np.arange(k), np.nan], len(part)).astype(np.float32)
        color = sample_colorscale("Viridis", [(b + 0.5) / bins])[0]
        hover = {"text": np.repeat(ids[group == b], k + 1), "hovertemplate": "%{text}<extra></extra>"} if named \
            else {"hoverinfo": "skip"}
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line={"color": color, "width": 1}, opacity=opacity,
                                 showlegend=False, **hover))
    if not named:
        fig.add_trace(go.Scatter(x=np.full(len(ys), k - 1, np.float32), y=ys[:, -1].astype(np.float32), text=ids,
                                 mode="markers", marker={"size": 4, "color": "rgba(0,0,0,0)"}, showlegend=False,
                                 hovertemplate="%{text}<extra></extra>"))
    lo, hi = float(rows[col].min()), float(rows[col].max())
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
                             marker={"color": [lo], "cmin": lo, "cmax": hi, "colorscale": "Viridis",
                                     "showscale": True, "colorbar": {"title": {"text": metric}}}))
    tick_x, tick_y, tick_text = [], [], []
    for i, d in enumerate(dims):
        fig.add_shape(type="line", x0=i, x1=i, y0=0, y1=1, line={"color": "#444", "width": 1})
        fig.add_annotation(x=i, y=1.04, text=f"<b>{d['label']}</b>", showarrow=False, yanchor="bottom",
                           font={"size": 12})
        a, z = d["range"]
        for tick, text in zip(d["tickvals"], d["ticktext"], strict=True):
            tick_x.append(i - 0.03)
            tick_y.append((tick - a) / (z - a) if z > a else 0.5)
            tick_text.append(text)
    fig.add_trace(go.Scatter(x=tick_x, y=tick_y, text=tick_text, mode="text", textposition="middle left",
                             textfont={"size": 10, "color": "#333"}, hoverinfo="skip", showlegend=False))
    fig.update_xaxes(visible=False, range=[-0.45, k - 0.75])
    fig.update_yaxes(visible=False, range=[-0.06, 1.12])
    return fig


def importance_figure(importances: dict[str, float], evaluator: str, metric: str,
                      left_out: list[str] = (), note: str = "") -> go.Figure:
    """Horizontal bars of parameter importance for the objective, largest on top; ``left_out`` named below."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[label(k) for k, _ in items], orientation="h",
                           marker_color="#6c8ebf", text=[f"{v:.2f}" for _, v in items], textposition="outside",
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="importance (sums to 1)", range=[0, max([v for _, v in items] + [0.01]) * 1.15])
    fig.update_yaxes(automargin=True)
    if left_out:
        fig.add_annotation(text="not scored (set in only some trials): " + ", ".join(label(p) for p in left_out),
                           xref="paper", yref="paper", x=0, y=-0.32, showarrow=False, xanchor="left",
                           font={"size": 11, "color": "#666"})
    title = f"Parameter importance for {metric} ({evaluator}; seed is not a parameter)<br><sup>{note}</sup>"
    return _layout(fig, title, 170 + 45 * len(items), margin={"l": 60, "r": 20, "t": 70, "b": 80})


def _density_trace(d: dense.Density, what: str, hover_x: str = "%{x}") -> go.Heatmap:
    """Counts of trials in bins, pale, under the marks of the best (no colour bar: the marks carry the colour)."""
    return go.Heatmap(x=d.x, y=d.y, z=d.z, colorscale=[[0, "#e6ecf5"], [1, "#5b7bb0"]], showscale=False,
                      hoverongaps=False, hovertemplate=f"%{{z}} {what}<br>{hover_x}, %{{y:.1f}}%<extra></extra>")


def _slice_marks(rows: pd.DataFrame, p: str, col: str, numeric: bool, color: str, symbol: str, hover: str
                 ) -> go.Scatter:
    x = rows[p] if numeric else rows[p].astype(str)
    return go.Scatter(x=x, y=rows[col], mode="markers", showlegend=False, text=rows["trial_id"],
                      marker={"size": 6, "opacity": 0.6 if symbol == "circle" else 1, "color": color,
                              "symbol": symbol},
                      hovertemplate=f"%{{text}}{hover}<br>{label(p)} %{{x}}<br>%{{y:.1f}}%<extra></extra>")


def slice_figure(trials: pd.DataFrame, params: list[str], metric: str, cols: int = 5,
                 stopped: pd.DataFrame | None = None, note: str = "") -> go.Figure:
    """One scatter per parameter: its value against the objective (%); log axes for wide positive ranges.
    ``stopped``: trials shown grey × beside the scored ones, not part of the comparison. Above
    ``dense.POINTS_MAX`` trials a panel draws them as a density (counts per bin) and the best as points."""
    col = f"final_{metric}"
    rows = trials[trials[col].notna()]
    stopped = stopped[stopped[col].notna()] if stopped is not None else None
    if rows.empty or not params:
        return empty_figure("no parameters vary, or no trial reported " + metric)
    nrows = math.ceil(len(params) / cols)
    ncols = math.ceil(len(params) / nrows)
    fig = make_subplots(rows=nrows, cols=ncols, shared_yaxes=True, horizontal_spacing=0.04, vertical_spacing=0.2,
                        subplot_titles=[label(p) for p in params])
    many = len(rows) > dense.POINTS_MAX
    for i, p in enumerate(params):
        r, c = divmod(i, ncols)
        sub = rows[rows[p].notna()]
        numeric, log = is_numeric(sub[p]), is_numeric(sub[p]) and _is_log(sub[p])
        if many:
            fig.add_trace(_density_trace(dense.density(sub[p], sub[col], log, not numeric), "trials (scored)"),
                          row=r + 1, col=c + 1)
            sub = dense.best_and_spread(sub, col, dense.BEST_MARKS, dense.BEST_MARKS)
        fig.add_trace(_slice_marks(sub, p, col, numeric, "#1f77b4", "circle", ""), row=r + 1, col=c + 1)
        if stopped is not None and len(stopped) and p in stopped:
            part = dense.best_and_spread(stopped[stopped[p].notna()], col, dense.OTHER_MARKS, 0)
            fig.add_trace(_slice_marks(part, p, col, numeric, "#9aa5b1", "x", " (stopped early, not scored)"),
                          row=r + 1, col=c + 1)
        if log:
            fig.update_xaxes(type="log", row=r + 1, col=c + 1)
        elif pd.api.types.is_integer_dtype(sub[p]) and len(sub) and sub[p].max() - sub[p].min() <= 10:
            fig.update_xaxes(dtick=1, row=r + 1, col=c + 1)
        elif not numeric:
            fig.update_xaxes(type="category", categoryorder="category ascending", row=r + 1, col=c + 1)
    fig.update_yaxes(title_text=f"{metric} %", col=1)
    fig.update_annotations(font_size=12)
    drawn = ""
    if many or (stopped is not None and len(stopped) > dense.OTHER_MARKS):
        drawn = (f"<br><sup>{len(rows):,} scored trials" + (f" as a density (shade: trials per bin), the best "
                                                            f"{dense.BEST_MARKS} as points" if many else "")
                 + (f"; {min(len(stopped), dense.OTHER_MARKS)} of {len(stopped):,} stopped early ×, spread by "
                    "the metric" if stopped is not None and len(stopped) > dense.OTHER_MARKS else "")
                 + "</sup>")
    return _layout(fig, f"Slices: each parameter vs {METRIC_LABELS.get(metric, metric)} %<br><sup>{note}</sup>"
                        + drawn, 270 * nrows + 80 + (20 if drawn else 0),
                   margin={"l": 60, "r": 20, "t": 80 + (20 if drawn else 0), "b": 45})


def pareto_figure(points: pd.DataFrame, x_metric: str, y_metric: str) -> go.Figure:
    """All trials by the first two objectives, the non-dominated front highlighted and joined."""
    if points.empty:
        return empty_figure("no trial reported both objectives yet")
    rest, front = points[~points["on_front"]], points[points["on_front"]].sort_values("x")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=rest["x"], y=rest["y"], mode="markers", name="dominated", text=rest["trial_id"],
                             marker={"color": "#9aa5b1", "size": 7, "opacity": 0.6},
                             hovertemplate="%{text}<br>%{x:.1f}%, %{y:.1f}%<extra></extra>"))
    fig.add_trace(go.Scatter(x=front["x"], y=front["y"], mode="lines+markers", name="Pareto front",
                             text=front["trial_id"], marker={"color": "#d62728", "size": 10},
                             line={"color": "#d62728", "dash": "dot"},
                             hovertemplate="%{text}<br>%{x:.1f}%, %{y:.1f}%<extra></extra>"))
    fig.update_xaxes(title_text=f"final {x_metric} %")
    fig.update_yaxes(title_text=f"final {y_metric} %")
    return _layout(fig, f"Pareto front: {x_metric} vs {y_metric} ({int(points['on_front'].sum())} on the front)",
                   360, legend={"orientation": "h", "y": -0.2})


# ---- learning curves ------------------------------------------------------------------------------
def curves_figure(epochs: pd.DataFrame, metric: str, colors: dict[str, str]) -> go.Figure:
    """Per selected trial over epochs: the chosen accuracy, the contrastive and CE losses, and alpha."""
    if epochs.empty:
        return empty_figure("select trials in the table (no epochs reported for them yet)")
    panels = [(metric, METRIC_LABELS.get(metric, metric) + " %"), ("con_loss", "contrastive loss"),
              ("ce_loss", "cross-entropy loss"), ("alpha", "α (weight of the contrastive loss)")]
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in panels], vertical_spacing=0.16,
                        horizontal_spacing=0.08)
    mode = "lines+markers" if epochs["epoch"].max() <= 40 else "lines"  # a one-epoch trial is still seen
    for t, rows in epochs.groupby("trial_id", sort=False):
        for i, (col, _) in enumerate(panels):
            y = 100 * rows[col] if col in ACCURACY_METRICS else rows[col]  # accuracies in percent
            fig.add_trace(go.Scatter(x=rows["epoch"], y=y, name=t, legendgroup=t, showlegend=i == 0,
                                     mode=mode, line={"color": colors.get(t)}, marker={"size": 4},
                                     hovertemplate=f"{t} epoch %{{x}}: %{{y:.3f}}<extra></extra>"),
                          row=i // 2 + 1, col=i % 2 + 1)
    fig.update_xaxes(tick0=1, dtick=max(1, math.ceil(epochs["epoch"].max() / 8)))
    fig.update_xaxes(title_text="epoch", row=2)
    fig.update_annotations(font_size=12)
    return _layout(fig, "Per trial: accuracy, losses and α over epochs (selected trials)", 560,
                   legend={"orientation": "h", "y": -0.12})


# ---- seeds grouped, paired comparison, diagnostics, history (accuracies in percent) ----------------
def group_stats_figure(report: pd.DataFrame, note: str) -> go.Figure:
    """Grouped bars: many / medium / few / overall per group, mean over seeds with the 95% CI as error bars
    (``report``: rows of ``sweep.paired.ablation_report``, in %)."""
    if report.empty:
        return empty_figure("select trials in the table")
    fig = go.Figure()
    for g, name in (("many", "many"), ("medium", "medium"), ("few", "few"), ("all", "overall")):
        rows = report[report["metric"] == name]
        # one seed has no interval: its error bar has length 0 and, without caps, draws nothing (plotly
        # reads a missing value as 0, and a capped zero-length bar would read as certainty)
        half = [0.0 if n < 2 or pd.isna(h) else h - m
                for n, h, m in zip(rows["n"], rows["ci95_high"], rows["mean"], strict=True)]
        spread = [f"± {h:.1f} (95% CI, {n} seeds)" if n >= 2 else f"({n} seed{'s' if n != 1 else ''}, no CI)"
                  for h, n in zip(half, rows["n"], strict=True)]
        fig.add_trace(go.Bar(x=rows["variant"], y=rows["mean"], name=name, marker_color=GROUP_COLORS[g],
                             error_y={"type": "data", "array": half, "visible": True, "width": 0, "thickness": 2},
                             customdata=spread,
                             text=[None if pd.isna(v) else f"{v:.0f}" for v in rows["mean"]], textposition="inside",
                             hovertemplate=f"%{{x}} {name}: %{{y:.1f}}% %{{customdata}}<extra></extra>"))
    fig.update_yaxes(title_text="accuracy % (mean; 95% CI over 2+ seeds)", range=[0, 105])
    fig.update_xaxes(type="category")
    # the legend under the bars: above them it ran into the budget line in a narrow side-by-side card
    return _layout(fig, f"Head / medium / tail by group<br><sup>{note}</sup>", 420, barmode="group",
                   legend={"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0},
                   margin={"l": 60, "r": 20, "t": 70, "b": 70})


def curve_bands_figure(bands: pd.DataFrame, metric: str, colors: dict[str, str]) -> go.Figure:
    """Learning curves per group: mean over seeds, the 95% CI as a band where there are 2+ seeds."""
    if bands.empty:
        return empty_figure("select trials in the table (no epochs reported for them yet)")
    fig = go.Figure()
    for g, rows in bands.groupby("group", sort=False):
        color = colors.get(g, "#1f77b4")
        mean, half = 100 * rows["mean"], 100 * rows["half"]
        if rows["half"].notna().any():
            fig.add_trace(go.Scatter(x=list(rows["epoch"]) + list(rows["epoch"])[::-1],
                                     y=list(mean + half.fillna(0)) + list(mean - half.fillna(0))[::-1],
                                     fill="toself", fillcolor=color, opacity=0.18, line={"width": 0},
                                     hoverinfo="skip", showlegend=False, legendgroup=g))
        fig.add_trace(go.Scatter(x=rows["epoch"], y=mean, name=g, legendgroup=g, mode="lines+markers",
                                 line={"color": color}, marker={"size": 4}, customdata=rows["n"],
                                 hovertemplate=f"{g}<br>epoch %{{x}}: %{{y:.1f}}% (%{{customdata}} seeds)"
                                               "<extra></extra>"))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text=f"{METRIC_LABELS.get(metric, metric)} %")
    return _layout(fig, "Learning curves by group (mean over seeds, 95% CI band)", 420,
                   legend={"orientation": "h", "y": -0.2})


def class_delta_figure(report: pd.DataFrame, counts: np.ndarray, reference: str, max_bins: int = 200) -> go.Figure:
    """Per-class Δ against the reference (percentage points), groups x classes by training count."""
    if report.empty or not len(counts):
        return empty_figure("pick two or more groups (select their trials) for a per-class Δ")
    others = [g for g in dict.fromkeys(report["variant"]) if g != reference]
    if not others:
        return empty_figure("select trials of another group than the reference")
    n = len(counts)
    delta = np.vstack([report.loc[report["variant"] == g, "diff_vs_ref"].astype(float).to_numpy() for g in others])
    from hybridlt.dashboards.queries import bin_edges, bin_mean

    edges = bin_edges(n, max_bins)
    z = bin_mean(delta, edges)
    x = (edges[:-1] + edges[1:] - 1) / 2
    span = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.25, 0.75], vertical_spacing=0.04)
    fig.add_trace(go.Bar(x=x, y=bin_mean(counts.astype(float), edges), marker_color="#6c8ebf", showlegend=False,
                         hovertemplate="ranks around %{x:.0f}: training count %{y:.0f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=z, x=x, y=others, zmid=0, zmin=-span, zmax=span, colorscale="RdBu",
                             colorbar={"title": {"text": "Δ pp"}, "len": 0.7, "y": 0.35},
                             hovertemplate="%{y}<br>class rank ≈ %{x:.0f}<br>Δ %{z:.1f} pp<extra></extra>"),
                  row=2, col=1)
    fig.update_yaxes(type="log", title_text="train count", row=1, col=1)
    binned = "" if len(edges) - 1 == n else f", mean per bin of {n / (len(edges) - 1):.1f} classes"
    fig.update_xaxes(title_text=f"class rank by training count (0 = most images{binned})", row=2, col=1)
    return _layout(fig, f"Per-class Δ vs {reference} (mean paired difference over seeds, percentage points)",
                   300 + 30 * len(others))


def confusion_figure(row: dict) -> go.Figure:
    """Where each group's test images go: true many/medium/few (rows) -> predicted group (columns), in %."""
    names = ("many", "medium", "few")
    z = [[row.get(f"confusion_{t}_to_{p}") for p in names] for t in names]
    if all(v is None or v != v for r in z for v in r):
        return empty_figure("no group confusion in this store (written before the diagnostics were recorded)")
    pct = [[None if v is None or v != v else 100 * v for v in r] for r in z]
    fig = go.Figure(go.Heatmap(z=pct, x=[f"→ {p}" for p in names], y=list(names), colorscale="Blues", zmin=0,
                               zmax=100, text=[[("-" if v is None else f"{v:.1f}%") for v in r] for r in pct],
                               texttemplate="%{text}", hovertemplate="true %{y} %{x}: %{z:.1f}%<extra></extra>",
                               colorbar={"title": {"text": "%"}}))
    fig.update_yaxes(autorange="reversed", title_text="true group")
    fig.update_xaxes(title_text="predicted group", side="bottom")
    return _layout(fig, "Group confusion (share of each true group's test images)", 330)


def weight_norm_figure(per_class: pd.DataFrame) -> go.Figure:
    """Each class's classifier weight norm against its training count (log axis)."""
    if per_class.empty or per_class["weight_norm"].isna().all():
        return empty_figure("no weight norms in this store (written before the diagnostics were recorded)")
    fig = go.Figure(go.Scatter(x=per_class["train_count"], y=per_class["weight_norm"], mode="markers",
                               text=per_class["class_name"], marker={"size": 6, "color": "#6c8ebf", "opacity": 0.7},
                               hovertemplate="class %{text}<br>train count %{x}<br>‖w‖ %{y:.3f}<extra></extra>"))
    fig.update_xaxes(type="log", title_text="training count")
    fig.update_yaxes(title_text="classifier weight norm ‖w‖")
    return _layout(fig, "Classifier weight norm vs training count", 330)


def posthoc_figure(row: dict) -> go.Figure:
    """Plain, logit-adjusted and τ-normalised accuracy (overall, balanced, few) from the same logits."""
    kinds = [("plain", ""), ("logit adjustment", "la_"), ("τ-normalisation", "taunorm_")]
    metrics = [("overall", "acc"), ("balanced", "balanced_acc"), ("few", "few_acc")]
    if all(row.get(f"la_{m}") is None or row.get(f"la_{m}") != row.get(f"la_{m}") for _, m in metrics):
        return empty_figure("no post-hoc accuracies in this store (written before the diagnostics were recorded)")
    fig = go.Figure()
    for (name, prefix), color in zip(kinds, ("#7f7f7f", "#2ca02c", "#9467bd"), strict=True):
        ys = [row.get(f"{prefix}{m}") for _, m in metrics]
        ys = [None if v is None or v != v else 100 * v for v in ys]
        fig.add_trace(go.Bar(x=[n for n, _ in metrics], y=ys, name=name, marker_color=color,
                             text=[None if v is None else f"{v:.1f}" for v in ys], textposition="outside",
                             hovertemplate=f"{name} %{{x}}: %{{y:.1f}}%<extra></extra>"))
    fig.update_yaxes(title_text="accuracy %", range=[0, 110])
    return _layout(fig, "What post-hoc fixes would give (τ = 1, same logits)", 330, barmode="group",
                   legend={"orientation": "h", "y": -0.2})


HISTORY_STYLES = (("completed", {"color": "#1f77b4", "symbol": "circle"}),
                  ("stopped_early", {"color": "#9aa5b1", "symbol": "x"}),
                  ("failed", {"color": "#d62728", "symbol": "x-thin-open"}),
                  ("interrupted", {"color": "#ff9f1c", "symbol": "diamond-open"}),
                  ("running", {"color": "#2ca02c", "symbol": "circle-open"}))


def history_figure(hist: pd.DataFrame, metric: str) -> go.Figure:
    """The objective by trial start, the best so far over completed trials; stopped trials marked ×.
    Above ``dense.POINTS_MAX`` trials the completed ones are a density with the records (each new best) as
    points, and each other status at most ``dense.OTHER_MARKS`` marks spread by the metric."""
    if hist.empty:
        return empty_figure("no finished trial yet")
    fig = go.Figure()
    many = len(hist) > dense.POINTS_MAX
    best = hist["best"].to_numpy(dtype=float)
    changed = np.r_[True, best[1:] != best[:-1]] & ~np.isnan(best)
    records = hist[changed | (np.arange(len(hist)) == len(hist) - 1)]  # the step line is exact on these
    cut = []
    for status, style in HISTORY_STYLES:
        rows = hist[hist["status"] == status]
        if rows.empty:
            continue
        if many and status == "completed":
            fig.add_trace(_density_trace(dense.density(rows["order"], 100 * rows["value"]), "completed trials",
                                         "trials #%{x:.0f}"))
            rows = hist[changed & (hist["status"] == "completed")]
        elif many and len(rows) > dense.OTHER_MARKS:
            cut.append(f"{dense.OTHER_MARKS} of {len(rows):,} {status.replace('_', ' ')}")
            rows = dense.best_and_spread(rows, "value", dense.OTHER_MARKS, 0).sort_values("order")
        fig.add_trace(go.Scatter(x=rows["order"], y=100 * rows["value"], mode="markers",
                                 name=status.replace("_", " ") + (" (new best)" if many and status == "completed"
                                                                  else ""),
                                 text=rows["trial_id"], marker={"size": 7, **style},
                                 hovertemplate="%{text}<br>trial #%{x}: %{y:.1f}%<extra></extra>"))
    fig.add_trace(go.Scatter(x=records["order"], y=100 * records["best"], mode="lines", name="best so far (completed)",
                             line={"color": "#d62728", "shape": "hv"}, hoverinfo="skip"))
    fig.update_xaxes(title_text="trial, in the order it started")
    fig.update_yaxes(title_text=f"final {METRIC_LABELS.get(metric, metric)} %")
    title = "History: objective by trial start"
    if many:
        title += (f"<br><sup>{len(hist):,} trials: completed ones as a density (shade: trials per bin), each new best "
                  "as a point" + ("; " + ", ".join(cut) + " shown, spread by the metric" if cut else "") + "</sup>")
    return _layout(fig, title, 340 + (20 if many else 0), legend={"orientation": "h", "y": -0.25})
