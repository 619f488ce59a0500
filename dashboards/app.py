"""The Dash app over a results store: layout and callbacks; data from ``queries``, charts from ``figures``.

``create_app(results, refresh_s)`` builds it; ``run_dashboard`` serves it on 127.0.0.1 by default.
The page looks for new files every ``refresh_s`` seconds, so a running sweep fills in as it goes.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.dash_table import DataTable
from dash.dash_table.Format import Format, Scheme

from hybridlt.dashboards import figures as fg
from hybridlt.dashboards import queries as q
from hybridlt.sweep.metrics import METRICS
from hybridlt.sweep.results import StoreError
from hybridlt.sweep.store import Location

HEATMAP_ROWS = 200
CLASS_BINS = 200
DEFAULT_SELECTED = 5
METRIC_COLUMNS = [*[(f"final_{m}", METRICS[m].label) for m in ("acc", "many_acc", "medium_acc", "few_acc",
                                                                 "balanced_acc")], ("best_acc", "best overall")]
GRAPHS = ("heatmap", "class-rank", "groups", "parallel", "importance", "slices", "curves")
CARD = {"background": "white", "borderRadius": "8px", "padding": "12px 16px", "margin": "12px 0",
        "boxShadow": "0 1px 3px rgba(0,0,0,0.12)"}
ROW = {"display": "flex", "flexWrap": "wrap", "gap": "12px"}
CELL = {"flex": "1 1 520px", "minWidth": 0}
GRAPH_CONFIG = {"displaylogo": False}


class Memo:
    """Results of slow aggregations (importance) per store version and arguments, computed once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[tuple, object] = {}

    def get(self, key: tuple, compute):
        with self._lock:
            if key not in self._values:
                if len(self._values) > 64:
                    self._values.clear()
                try:
                    self._values[key] = ("ok", compute())
                except ValueError as exc:
                    self._values[key] = ("error", str(exc))
            return self._values[key]


# ---- pieces of the page ---------------------------------------------------------------------------
def table_columns(trials: pd.DataFrame) -> list[dict]:
    """DataTable columns: id, status, epochs, the varying parameters, then the metrics (3 decimals)."""
    cols = [{"id": "trial_id", "name": "trial"}, {"id": "status", "name": "status"},
            {"id": "epochs_done", "name": "epochs", "type": "numeric"}]
    for p in q.param_columns(trials):
        numeric = fg.is_numeric(trials[p])
        cols.append({"id": p, "name": fg.label(p), "type": "numeric" if numeric else "text",
                     **({"format": Format(precision=3, scheme=Scheme.decimal_or_exponent)} if numeric else {})})
    cols += [{"id": c, "name": n, "type": "numeric", "format": Format(precision=3, scheme=Scheme.fixed)}
             for c, n in METRIC_COLUMNS if c in trials]
    return cols


def table_rows(trials: pd.DataFrame, columns: list[dict], metric: str, mode: str) -> list[dict]:
    """Only the shown columns (plus the row id), best trial first; missing values as None."""
    ids = [c["id"] for c in columns]
    frame = q.order_trials(trials, metric, mode)[ids].copy()
    for c in ids:  # 4 significant digits: what the table shows, in fewer bytes
        if pd.api.types.is_float_dtype(frame[c]):
            frame[c] = frame[c].map(lambda v: float(f"{v:.4g}") if pd.notna(v) else v)
    frame = frame.astype(object)
    frame = frame.where(frame.notna(), None)
    return [{**r, "id": r["trial_id"]} for r in frame.to_dict("records")]


def status_line(cache: q.ResultsCache, trials: pd.DataFrame) -> str:
    """Trials by status, the store and when it was last looked at."""
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    parts = [f"{counts.get(s, 0)} {n}" for s, n in (("completed", "completed"), ("stopped_early", "stopped early"),
                                                    ("failed", "failed"), ("running", "running"))]
    return (f"{len(trials)} trials: {', '.join(parts)} · store {cache.root or cache.where} · "
            f"checked {time.strftime('%H:%M:%S')}")


def _banner_style(message: str | None) -> dict:
    base = {"padding": "10px 14px", "borderRadius": "6px", "background": "#fff4e5", "border": "1px solid #f0b66b",
            "margin": "8px 0"}
    return base if message else {"display": "none"}


def _trials_table(columns: list[dict], rows: list[dict], selected: list[int]) -> DataTable:
    with warnings.catch_warnings():  # Dash 4 announces DataTable's move out of the core; it still ships it
        warnings.simplefilter("ignore", DeprecationWarning)
        return DataTable(
            id="trials", columns=columns, data=rows, row_selectable="multi", selected_rows=selected,
            selected_row_ids=[rows[i]["id"] for i in selected], filter_action="native", sort_action="native",
            sort_mode="multi", page_action="native", page_size=12, style_table={"overflowX": "auto"},
            style_cell={"fontFamily": "system-ui, sans-serif", "fontSize": "13px", "padding": "4px 8px",
                        "maxWidth": "160px", "overflow": "hidden", "textOverflow": "ellipsis"},
            style_header={"fontWeight": "600", "background": "#f0f2f5"},
            style_data_conditional=[{"if": {"state": "selected"}, "background": "#e8f0fe",
                                     "border": "1px solid #c5d5f5"}],
            filter_options={"case": "insensitive"}, tooltip_delay=300,
        )


def _graph(graph_id: str, start: dict, height: int = 380) -> dcc.Graph:
    """A chart, drawn from the start with the figure ``start`` holds for it (none in the skeleton)."""
    figure = start.get((graph_id, "figure"))
    return dcc.Graph(id=graph_id, config=GRAPH_CONFIG, style={"minHeight": f"{height}px"},
                     **({"figure": figure} if figure is not None else {}))


def _section(title: str, *children, note: str | None = None) -> html.Div:
    head = [html.H3(title, style={"margin": "4px 0 8px"})]
    if note:
        head.append(html.Div(note, style={"color": "#555", "fontSize": "13px", "marginBottom": "6px"}))
    return html.Div([*head, *children], style=CARD)


def _pair(left: dcc.Graph, right: dcc.Graph, right_id: str | None = None, right_style: dict | None = None,
          flex: tuple[str, str] = ("1 1 520px", "1 1 520px")) -> html.Div:
    """Two charts side by side, wrapping under each other on narrow screens."""
    right_style = {**CELL, "flex": flex[1], **(right_style or {})}
    right_box = html.Div(right, id=right_id, style=right_style) if right_id else html.Div(right, style=right_style)
    return html.Div([html.Div(left, style={**CELL, "flex": flex[0]}), right_box], style=ROW)


def _controls(metric: str) -> html.Div:
    options = [{"label": fg.METRIC_LABELS[m], "value": m} for m in q.METRICS]
    return html.Div([html.Label("metric", style={"marginRight": "8px", "fontWeight": 600}),
                     dcc.Dropdown(id="metric", options=options, value=metric, clearable=False,
                                  style={"width": "260px"}),
                     html.Span("orders the heatmap; drives parallel coordinates, importance, slices and curves",
                               style={"color": "#555", "fontSize": "13px", "marginLeft": "10px"})],
                    style={"display": "flex", "alignItems": "center", "margin": "8px 0"})


def _parallel_mode() -> dcc.RadioItems:
    return dcc.RadioItems(id="parallel-mode", value="static", inline=True, style={"fontSize": "13px"},
                          inputStyle={"marginRight": "4px", "marginLeft": "12px"},
                          options=[{"label": "parallel coordinates: quick lines", "value": "static"},
                                   {"label": "interactive (drag along an axis to filter; WebGL, slower without a GPU)",
                                    "value": "interactive"}])


def _config_section(start: dict) -> html.Div:
    return _section("Best config", html.Div([
        dcc.Dropdown(id="config-trial", clearable=False, style={"width": "280px"},
                     options=start.get(("config-trial", "options"), []), value=start.get(("config-trial", "value"))),
        html.Button("Download YAML", id="download-button", style={"marginLeft": "12px"}),
        dcc.Download(id="download")], style={"display": "flex", "alignItems": "center"}),
        html.Pre(start.get(("config-yaml", "children")), id="config-yaml",
                 style={"background": "#f6f8fa", "padding": "10px", "maxHeight": "420px", "overflow": "auto",
                        "fontSize": "12px"}),
        note="What `hybridlt export-best` writes for the chosen trial (by default the best selected one by the "
             "metric); train it with `hybridlt train --config FILE`.")


def build_layout(cache: q.ResultsCache, memo: Memo, refresh_s: float = 5.0, skeleton: bool = False) -> html.Div:
    """The whole page with every chart drawn for the best trials, selected in the filled table.

    The charts come with the page, so a first view costs one request; callbacks redraw them on
    changes. ``skeleton``: the same components without data (Dash's callback validation layout).
    """
    if not skeleton:
        cache.refresh(max_age_s=1.0)
    trials = cache.trials().head(0) if skeleton else cache.trials()
    metrics, modes = cache.objective()
    metric = metrics[0] if metrics[0] in q.METRICS else "acc"
    columns = table_columns(trials)
    rows = table_rows(trials, columns, metric, modes[0])
    selected = list(range(min(DEFAULT_SELECTED, len(rows))))
    start = {} if skeleton else chart_values(cache, memo, [rows[i]["id"] for i in selected], metric)
    hidden = {"display": "none"}
    name = ((cache.sweep_doc.get("spec") or {}).get("name")) or Path(str(cache.where)).name
    return html.Div([
        html.Div([html.H2(f"hybridlt sweep: {name}", style={"margin": "0"}),
                  html.Div(status_line(cache, trials), id="status", style={"color": "#555", "fontSize": "13px"})]),
        html.Div(cache.message, id="banner", style=_banner_style(cache.message)),
        _controls(metric),
        _section("Trials", _trials_table(columns, rows, selected),
                 note="Sort and filter the columns (e.g. > 0.9 or psc); tick rows to drive the charts below."),
        _section("Per-class accuracy", _pair(_graph("heatmap", start, 440), _graph("class-rank", start, 420),
                                             flex=("3 1 640px", "2 1 420px"))),
        _section("Head / medium / tail", _pair(_graph("groups", start), _graph("variants", start), "variants-box",
                                               start.get(("variants-box", "style"), hidden))),
        _section("What drives accuracy", _parallel_mode(), _graph("parallel", start, 420),
                 _pair(_graph("importance", start, 240), _graph("pareto", start, 360), "pareto-box",
                       start.get(("pareto-box", "style"), hidden)),
                 _graph("slices", start, 330)),
        _section("Learning curves", _graph("curves", start, 560)),
        _config_section(start),
        dcc.Interval(id="tick", interval=int(1000 * refresh_s), n_intervals=0),
        dcc.Store(id="version", data=cache.version),
    ], style={"fontFamily": "system-ui, sans-serif", "background": "#f5f6f8", "padding": "12px 20px"})


# ---- what the callbacks return ----------------------------------------------------------------------
def refresh_outputs(cache: q.ResultsCache, version: int | None, selected_ids: list[str] | None, metric: str) -> tuple:
    """After a tick: new table rows, columns and selection when the store changed; the status line always."""
    cache.refresh()
    trials = cache.trials()
    if cache.version == version:
        return (no_update,) * 5 + (status_line(cache, trials), no_update, no_update)
    _, modes = cache.objective()
    columns = table_columns(trials)
    rows = table_rows(trials, columns, metric, modes[0])
    keep = set(selected_ids or []) or {r["id"] for r in rows[:DEFAULT_SELECTED]}
    selected = [i for i, r in enumerate(rows) if r["id"] in keep]
    return (cache.version, rows, columns, selected, [rows[i]["id"] for i in selected],
            status_line(cache, trials), cache.message, _banner_style(cache.message))


def per_class_figures(cache: q.ResultsCache, selected: list[str], metric: str) -> tuple[go.Figure, go.Figure]:
    """The heatmap (best trials by ``metric`` plus the selected ones) and accuracy vs rank of the selected."""
    trials = cache.trials()
    _, modes = cache.objective()
    order = q.order_trials(trials, metric, modes[0])["trial_id"].tolist()
    shown = set(order[:HEATMAP_ROWS]) | set(selected)
    per_class = cache.last_per_class([t for t in order if t in shown])
    heat = q.class_matrix(per_class, [t for t in order if t in shown], CLASS_BINS)
    rank = q.class_matrix(per_class, selected, CLASS_BINS)
    marks = q.group_boundaries(rank, cache.group_thresholds())
    return (fg.class_heatmap_figure(heat, selected, metric, len(trials)),
            fg.class_rank_figure(q.class_curves(per_class, selected, CLASS_BINS), fg.trial_colors(selected), marks,
                                 rank.names is None))


def group_figures(cache: q.ResultsCache, selected: list[str]) -> tuple[go.Figure, go.Figure, dict]:
    """Head / medium / tail bars of the selected trials; per-variant bars (and their box shown) for ablations."""
    trials = cache.trials()
    bars = fg.group_bars_figure(q.group_accuracy(trials, selected))
    if not q.is_ablation(trials):
        return bars, fg.empty_figure(""), {**CELL, "display": "none"}
    return bars, fg.variant_bars_figure(q.variant_accuracy(trials)), CELL


def parallel_figure(cache: q.ResultsCache, metric: str, mode: str = "static") -> go.Figure:
    """Parallel coordinates of the varying parameters against ``metric``."""
    trials = q.finished_trials(cache.trials())
    return fg.parallel_figure(trials, q.param_columns(trials), metric, interactive=mode == "interactive")


def driver_figures(cache: q.ResultsCache, metric: str) -> tuple[go.Figure, go.Figure, dict]:
    """Slices and, for multi-objective sweeps, the Pareto front (its box shown); finished trials only."""
    trials = q.finished_trials(cache.trials())
    params = q.param_columns(trials)
    metrics, modes = cache.objective()
    pareto, style = fg.empty_figure(""), {**CELL, "display": "none"}
    if len(metrics) > 1 and all(f"final_{m}" in trials for m in metrics[:2]):
        pareto = fg.pareto_figure(q.pareto_points(trials, metrics, modes, cache.pareto_ids()), metrics[0], metrics[1])
        style = CELL
    return fg.slice_figure(trials, params, metric), pareto, style


def importance_figure(cache: q.ResultsCache, memo: Memo, metric: str) -> go.Figure:
    """Parameter importance for ``metric``, computed once per store version."""
    _, modes = cache.objective()
    kind, value = memo.get(("importance", cache.version, metric),
                           lambda: q.param_importance(cache.trials(), metric, modes[0]))
    if kind == "error":
        return fg.empty_figure(value)
    left_out = [p for p in q.param_columns(q.finished_trials(cache.trials())) if p not in value[0]]
    return fg.importance_figure(value[0], value[1], metric, left_out)


def curves_figure(cache: q.ResultsCache, selected: list[str], metric: str) -> go.Figure:
    """Learning curves of the selected trials (their epoch files are read on first use)."""
    return fg.curves_figure(cache.epochs(selected), metric, fg.trial_colors(selected))


def chart_values(cache: q.ResultsCache, memo: Memo, selected: list[str], metric: str,
                 mode: str = "static") -> dict[tuple[str, str], object]:
    """Every chart's ``(component id, property)`` value for a selection and metric: the page's first view."""
    heat, rank = per_class_figures(cache, selected, metric)
    groups, variants, variants_style = group_figures(cache, selected)
    slices, pareto, pareto_style = driver_figures(cache, metric)
    options, value = config_choices(cache, selected, metric)
    return {("heatmap", "figure"): heat, ("class-rank", "figure"): rank, ("groups", "figure"): groups,
            ("variants", "figure"): variants, ("variants-box", "style"): variants_style,
            ("parallel", "figure"): parallel_figure(cache, metric, mode), ("slices", "figure"): slices,
            ("pareto", "figure"): pareto, ("pareto-box", "style"): pareto_style,
            ("importance", "figure"): importance_figure(cache, memo, metric),
            ("curves", "figure"): curves_figure(cache, selected, metric), ("config-trial", "options"): options,
            ("config-trial", "value"): value, ("config-yaml", "children"): config_yaml(cache, value, metric)}


def config_choices(cache: q.ResultsCache, selected: list[str], metric: str) -> tuple[list[dict], str | None]:
    """The trials the config view offers (the selected ones) and the best of them by ``metric``."""
    trials = cache.trials()
    _, modes = cache.objective()
    pool = trials[trials["trial_id"].isin(selected)] if selected else trials
    best = q.best_trial_id(pool, metric, modes[0]) or (str(pool["trial_id"].iloc[0]) if len(pool) else None)
    ids = list(selected) or ([best] if best else [])
    return [{"label": t, "value": t} for t in ids], best


def register_callbacks(app: Dash, cache: q.ResultsCache, memo: Memo) -> None:
    """Wire the table, the metric and the refresh tick to the charts (which the page starts with drawn)."""
    sel = Input("trials", "selected_row_ids")
    ver, met = Input("version", "data"), Input("metric", "value")
    later = {"prevent_initial_call": True}

    app.callback(Output("version", "data"), Output("trials", "data"), Output("trials", "columns"),
                 Output("trials", "selected_rows"), Output("trials", "selected_row_ids"),
                 Output("status", "children"), Output("banner", "children"), Output("banner", "style"),
                 Input("tick", "n_intervals"), State("version", "data"), State("trials", "selected_row_ids"),
                 State("metric", "value"), prevent_initial_call=True)(
        lambda _, version, ids, metric: refresh_outputs(cache, version, ids, metric))
    app.callback(Output("heatmap", "figure"), Output("class-rank", "figure"), ver, sel, met, **later)(
        lambda _, ids, metric: per_class_figures(cache, list(ids or []), metric))
    app.callback(Output("groups", "figure"), Output("variants", "figure"), Output("variants-box", "style"),
                 ver, sel, **later)(lambda _, ids: group_figures(cache, list(ids or [])))
    app.callback(Output("parallel", "figure"), ver, met, Input("parallel-mode", "value"), **later)(
        lambda _, metric, mode: parallel_figure(cache, metric, mode))
    app.callback(Output("slices", "figure"), Output("pareto", "figure"), Output("pareto-box", "style"), ver, met,
                 **later)(lambda _, metric: driver_figures(cache, metric))
    app.callback(Output("importance", "figure"), ver, met, **later)(
        lambda _, metric: importance_figure(cache, memo, metric))
    app.callback(Output("curves", "figure"), ver, sel, met, **later)(
        lambda _, ids, metric: curves_figure(cache, list(ids or []), metric))
    app.callback(Output("config-trial", "options"), Output("config-trial", "value"), ver, sel, met, **later)(
        lambda _, ids, metric: config_choices(cache, list(ids or []), metric))
    app.callback(Output("config-yaml", "children"), Input("config-trial", "value"), met, **later)(
        lambda trial_id, metric: config_yaml(cache, trial_id, metric))

    @app.callback(Output("download", "data"), Input("download-button", "n_clicks"), State("config-trial", "value"),
                  State("metric", "value"), prevent_initial_call=True)
    def download(_, trial_id, metric):
        if not trial_id:
            return no_update
        return dcc.send_string(config_yaml(cache, trial_id, metric), filename=f"{trial_id}-best.yaml")


def config_yaml(cache: q.ResultsCache, trial_id: str | None, metric: str) -> str:
    """The export-best YAML of ``trial_id``, or one line saying why there is none."""
    if not trial_id:
        return "no trial yet"
    try:
        return q.export_yaml(cache.trials(), trial_id, cache.root, metric)
    except (KeyError, ValueError) as exc:
        return f"trial {trial_id}: {exc.args[0] if exc.args else exc}"


# ---- entry points -----------------------------------------------------------------------------------
def create_app(results_path: str | Path | Location, refresh_s: float = 5.0) -> Dash:
    """The Dash app over the store at ``results_path`` (the results folder or the sweep folder above it).

    Raises ``StoreError`` when the path does not exist; an existing path that holds no results yet
    serves a page saying so, which fills in when the sweep writes.
    """
    return _build(results_path, refresh_s)[0]


def _build(results_path: str | Path | Location, refresh_s: float) -> tuple[Dash, q.ResultsCache]:
    if not Location.of(results_path).exists():
        raise StoreError(f"RESULTS: {results_path} does not exist; give a sweep's results folder "
                         f"(e.g. runs/sweeps/NAME/results) or the sweep folder above it")
    cache = q.ResultsCache(results_path)
    cache.refresh()
    app = Dash(__name__, title="hybridlt dashboard", update_title=None)
    # Dash would otherwise embed a first full layout (the whole trials table) in every page as its
    # callback-validation layout: the same components without data do.
    memo = Memo()
    app.validation_layout = build_layout(cache, memo, refresh_s, skeleton=True)
    app.layout = lambda: build_layout(cache, memo, refresh_s)
    register_callbacks(app, cache, memo)
    threading.Thread(target=_warm, args=(cache, memo, refresh_s), daemon=True).start()
    return app, cache


def _warm(cache: q.ResultsCache, memo: Memo, refresh_s: float) -> None:
    """The first page's slow steps while nobody waits: per-class files and importance.
    Best effort: a failure here happens again, and is shown, when the page asks."""
    try:
        build_layout(cache, memo, refresh_s)
    except Exception as exc:  # noqa: BLE001
        logging.getLogger(__name__).debug("warm-up failed: %s", exc)


def run_dashboard(results: str | Path, host: str = "127.0.0.1", port: int = 8050, refresh_s: float = 5.0) -> None:
    """Serve the dashboard until Ctrl-C; binds the loopback interface unless ``host`` says otherwise."""
    app, cache = _build(results, refresh_s)
    if cache.message:
        print(f"warning: {cache.message}")
    else:
        print(f"dashboard of {cache.root}: {len(cache.trials())} trials")
    print(f"open http://{host}:{port}/ (Ctrl-C to stop)")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app.run(host=host, port=port, debug=False)


