"""The Dash app over a results store: layout and callbacks; data from ``queries``, charts from ``figures``.

``create_app(results, refresh_s)`` builds it; ``run_dashboard`` serves it on 127.0.0.1 by default.
The page looks for new files every ``refresh_s`` seconds, so a running sweep fills in as it goes.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import yaml
from dash import Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.dash_table import DataTable
from dash.dash_table.Format import Format, Scheme

from hybridlt.dashboards import figures as fg
from hybridlt.dashboards import groups as gr
from hybridlt.dashboards import queries as q
from hybridlt.dashboards import table as tb
from hybridlt.errors import InputError
from hybridlt.sweep.metrics import ACCURACY_METRICS, METRICS
from hybridlt.sweep.results import StoreError, write_note
from hybridlt.sweep.store import Location

HEATMAP_ROWS = 200
CLASS_BINS = 200
DEFAULT_SELECTED = 5
DEFAULT_GROUPS = 5  # the best groups' trials (every seed) are selected when the page opens
STORE_GROUPS = 5
CURVE_TRIALS = 60
STATUSES = ("completed", "stopped_early", "interrupted", "failed", "running")
PAIRED_COLUMNS = ["group", "metric", "seeds", "mean %", "95% CI", "pairs", "Δ pp", "Δ 95% CI", "p (paired t)"]
METRIC_COLUMNS = [*[(f"final_{m}", METRICS[m].label) for m in ("acc", "many_acc", "medium_acc", "few_acc",
                                                                 "balanced_acc")], ("best_acc", "best overall")]
GRAPHS = ("heatmap", "class-rank", "groups", "parallel", "importance", "slices", "curves", "history")
DIAGNOSTIC_GRAPHS = ("confusion", "weight-norm", "posthoc")
# The charts sit in tabs: the browser draws only the open tab's (plotly costs ~0.1-0.3 s a chart on a
# CPU without a GPU); the others keep their figures in the page and are drawn when their tab opens.
# tab value -> (label, the charts in it that always hold data)
TABS = {"groups": ("Head / medium / tail", ("groups",)),
        "classes": ("Per class", ("heatmap", "class-rank")),
        "drivers": ("What drives accuracy", ("parallel", "importance", "slices")),
        "history": ("History and curves", ("history", "curves")),
        "diagnostics": ("Long-tail diagnostics", DIAGNOSTIC_GRAPHS)}
FIRST_TAB = "groups"
CARD = {"background": "white", "borderRadius": "8px", "padding": "12px 16px", "margin": "12px 0",
        "boxShadow": "0 1px 3px rgba(0,0,0,0.12)"}
ROW = {"display": "flex", "flexWrap": "wrap", "gap": "12px"}
CELL = {"flex": "1 1 520px", "minWidth": 0}
GRAPH_CONFIG = {"displaylogo": False}
NOTE = {"color": "#555", "fontSize": "13px"}
PRE = {"background": "#f6f8fa", "padding": "10px", "maxHeight": "420px", "overflow": "auto", "fontSize": "12px"}


class Memo:
    """Results of slow aggregations (importance) per store version and arguments, computed once."""

    def __init__(self):
        self._lock = threading.RLock()  # a memoised first view computes memoised views inside it
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


# ---- one view of a store: budget, groups, seeds (computed once per store version, metric and rule) ----
@dataclass
class View:
    """What every chart reads: the trials, the budget in force, the groups (seeds together) and their order."""

    trials: pd.DataFrame
    budget: gr.Budget
    params: list[str]
    labels: pd.Series
    seeds: pd.Series
    members: dict[str, list[str]]
    ranked: list[str]
    metric: str
    mode: str

    def groups_of(self, trial_ids: list[str]) -> list[str]:
        """The groups of these trials, best first."""
        wanted = {self.labels.get(t) for t in trial_ids if t in self.labels.index}
        return [g for g in self.ranked if g in wanted] + sorted(g for g in wanted - set(self.ranked) if g)


def make_view(cache: q.ResultsCache, metric: str, rule: str) -> View:
    trials = cache.trials()
    _, modes = cache.objective()
    finished = q.finished_trials(trials)
    epoch = gr.common_epoch(finished) if rule == "common" else None
    rows = cache.epochs_at(finished["trial_id"].tolist(), epoch) if epoch is not None else None
    budget = gr.apply_budget(trials, rule, rows, epoch)
    params = q.param_columns(finished)
    labels = gr.group_labels(trials, params)
    seeds = gr.seeds_of(trials)
    members: dict[str, list[str]] = {}
    for t, g in labels.items():
        members.setdefault(g, []).append(t)
    scored = budget.frame[budget.frame["scored"]]
    means = scored.groupby(scored["trial_id"].map(labels))[f"final_{metric}"].mean()
    ranked = list(means.sort_values(ascending=modes[0] == "min", kind="stable").index)
    return View(trials, budget, params, labels, seeds, members, ranked, metric, modes[0])


def view_of(cache: q.ResultsCache, memo: Memo, metric: str, rule: str) -> View:
    kind, value = memo.get(("view", id(cache), cache.version, metric, rule), lambda: make_view(cache, metric, rule))
    if kind == "error":
        raise ValueError(value)
    return value


def percent(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with the accuracy columns (fractions) in percent, for charts and the table."""
    cols = [c for c in frame.columns if c.removeprefix("final_").removeprefix("best_") in ACCURACY_METRICS
            and c != "best_epoch"]
    return frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") * 100 for c in cols})


def default_selection(view: View, limit: int = 40) -> list[str]:
    """The trials of the best ``DEFAULT_GROUPS`` groups (all seeds), at most ``limit`` rows."""
    ids = [t for g in view.ranked[:DEFAULT_GROUPS] for t in view.members.get(g, [])]
    return ids[:limit]


# ---- pieces of the page ---------------------------------------------------------------------------
def table_columns(view: View) -> list[dict]:
    """Trial, group (when seeds group), status, epochs, the accuracies in %, the parameters, the notes."""
    pct = Format(precision=1, scheme=Scheme.fixed)
    cols = [{"id": "trial_id", "name": "trial"}]
    if any(len(m) > 1 for m in view.members.values()):
        cols.append({"id": "group", "name": "group"})
    cols += [{"id": "status", "name": "status"}, {"id": "epochs_done", "name": "ep", "type": "numeric"}]
    cols += [{"id": c, "name": f"{n} %", "type": "numeric", "format": pct} for c, n in METRIC_COLUMNS
             if c in view.trials]
    for p in gr.hyperparams(view.params) + ([gr.SEED] if gr.SEED in view.params else []):
        numeric = fg.is_numeric(view.trials[p])
        whole = p == gr.SEED or pd.api.types.is_integer_dtype(view.trials[p])  # positives: 2, not 2.00
        fmt = Format(precision=0, scheme=Scheme.fixed) if whole else \
            Format(precision=3, scheme=Scheme.decimal_or_exponent)
        cols.append({"id": p, "name": fg.label(p), "type": "numeric" if numeric else "text",
                     **({"format": fmt} if numeric else {})})
    return [*cols, {"id": "notes", "name": "notes"}]


def table_frame(view: View, columns: list[dict], notes: dict[str, dict]) -> pd.DataFrame:
    """Every trial as the table shows it (the shown columns, accuracies in %, rounded as shown), ordered by the
    chosen metric, best first: what the table's pages, sorting and filters are cut from."""
    frame = percent(q.order_trials(view.trials, view.metric, view.mode))
    frame = frame.assign(group=frame["trial_id"].map(view.labels),
                         notes=frame["trial_id"].map(lambda t: note_text(notes.get(t))))
    return tb.round_shown(frame[[c["id"] for c in columns]].reset_index(drop=True))


def table_rows(view: View, columns: list[dict], notes: dict[str, dict]) -> list[dict]:
    """All rows of the table (with their ``id``), best first; the browser gets them a page at a time."""
    return tb.records(table_frame(view, columns, notes))


def note_text(note: dict | None) -> str | None:
    if not note:
        return None
    tags = " ".join(f"#{t}" for t in note.get("tags", []))
    return f"{tags} {note.get('note', '')}".strip() or None


def status_line(cache: q.ResultsCache, trials: pd.DataFrame) -> str:
    """Trials by status, the store and when it was last looked at."""
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    parts = [f"{counts.get(s, 0)} {s.replace('_', ' ')}" for s in STATUSES if counts.get(s) or s != "interrupted"]
    return (f"{len(trials)} trials: {', '.join(parts)} · store {cache.root or cache.where} · "
            f"checked {time.strftime('%H:%M:%S')}")


def _banner_style(message: str | None) -> dict:
    base = {"padding": "10px 14px", "borderRadius": "6px", "background": "#fff4e5", "border": "1px solid #f0b66b",
            "margin": "8px 0"}
    return base if message else {"display": "none"}


def _trials_table(columns: list[dict], page: dict) -> DataTable:
    """The table holds one page; filtering, sorting and paging are done by the server (``table_page``)."""
    with warnings.catch_warnings():  # Dash 4 announces DataTable's move out of the core; it still ships it
        warnings.simplefilter("ignore", DeprecationWarning)
        return DataTable(
            id="trials", columns=columns, data=page.get("data", []), row_selectable="multi",
            selected_rows=page.get("selected_rows", []), selected_row_ids=page.get("selected_row_ids", []),
            filter_action="custom", sort_action="custom", sort_mode="multi", page_action="custom",
            page_current=page.get("page_current", 0), page_size=tb.PAGE_SIZE, page_count=page.get("page_count", 1),
            style_table={"overflowX": "auto"},
            style_cell={"fontFamily": "system-ui, sans-serif", "fontSize": "12px", "padding": "3px 6px",
                        "maxWidth": "130px", "overflow": "hidden", "textOverflow": "ellipsis"},
            style_header={"fontWeight": "600", "background": "#f0f2f5"},
            style_data_conditional=[{"if": {"state": "selected"}, "background": "#e8f0fe",
                                     "border": "1px solid #c5d5f5"},
                                    {"if": {"filter_query": '{status} = "stopped_early"'}, "color": "#8a8f98"}],
            filter_options={"case": "insensitive"}, tooltip_delay=300,
        )


def _table_notes(page: dict, selection: list[str]) -> html.Div:
    """How many trials match and how many are selected, under the table."""
    return html.Div([html.Span(page.get("note"), id="table-note"),
                     html.Span(selected_note(selection), id="selected-note")], style=NOTE)


def _small_table(table_id: str, rows: list[dict], columns: list[str]) -> DataTable:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return DataTable(id=table_id, data=rows, columns=[{"id": c, "name": c} for c in columns],
                         style_table={"overflowX": "auto"}, style_header={"fontWeight": "600", "background": "#f0f2f5"},
                         style_cell={"fontFamily": "system-ui, sans-serif", "fontSize": "12px", "padding": "3px 8px"})


def _graph(graph_id: str, start: dict, height: int = 380) -> dcc.Graph:
    """A chart, drawn from the start with the figure ``start`` holds for it (none in the skeleton)."""
    figure = start.get((graph_id, "figure"))
    return dcc.Graph(id=graph_id, config=GRAPH_CONFIG, style={"minHeight": f"{height}px"},
                     **({"figure": figure} if figure is not None else {}))


def _tabs(content: dict[str, list]) -> dcc.Tabs:
    """The chart sections, one tab each (``TABS``); the open tab is kept for the browser session."""
    return dcc.Tabs(id="view-tab", value=FIRST_TAB, persistence=True, persistence_type="session",
                    style={"marginTop": "12px"},
                    children=[dcc.Tab(label=TABS[k][0], value=k, id=f"tab-{k}", children=html.Div(content[k]),
                                      style={"padding": "8px 12px"}, selected_style={"padding": "8px 12px"})
                              for k in TABS])


def _section(title: str, *children, note: str | None = None, section_id: str | None = None) -> html.Div:
    head = [html.H3(title, style={"margin": "4px 0 8px"})]
    if note:
        head.append(html.Div(note, style={"color": "#555", "fontSize": "13px", "marginBottom": "6px"}))
    return html.Div([*head, *children], style=CARD, **({"id": section_id} if section_id else {}))


def _pair(left, right, right_id: str | None = None, right_style: dict | None = None,
          flex: tuple[str, str] = ("1 1 520px", "1 1 520px")) -> html.Div:
    """Two charts side by side, wrapping under each other on narrow screens."""
    right_style = {**CELL, "flex": flex[1], **(right_style or {})}
    right_box = html.Div(right, id=right_id, style=right_style) if right_id else html.Div(right, style=right_style)
    return html.Div([html.Div(left, style={**CELL, "flex": flex[0]}), right_box], style=ROW)


def _dropdown(dd_id: str, start: dict, width: str = "320px") -> dcc.Dropdown:
    return dcc.Dropdown(id=dd_id, clearable=False, style={"width": width}, options=start.get((dd_id, "options"), []),
                        value=start.get((dd_id, "value")))


def _controls(metric: str, rule: str) -> html.Div:
    options = [{"label": fg.METRIC_LABELS[m], "value": m} for m in q.METRICS]
    return html.Div([html.Label("metric", style={"marginRight": "8px", "fontWeight": 600}),
                     dcc.Dropdown(id="metric", options=options, value=metric, clearable=False,
                                  style={"width": "230px"}),
                     html.Label("budget", style={"margin": "0 8px 0 18px", "fontWeight": 600}),
                     dcc.RadioItems(id="budget", value=rule, inline=True, style={"fontSize": "13px"},
                                    inputStyle={"marginRight": "4px", "marginLeft": "10px"},
                                    options=[{"label": v, "value": k} for k, v in gr.BUDGETS.items()])],
                    style={"display": "flex", "alignItems": "center", "margin": "8px 0", "flexWrap": "wrap"})


def _parallel_mode() -> dcc.RadioItems:
    return dcc.RadioItems(id="parallel-mode", value="static", inline=True, style={"fontSize": "13px"},
                          inputStyle={"marginRight": "4px", "marginLeft": "12px"},
                          options=[{"label": "parallel coordinates: quick lines", "value": "static"},
                                   {"label": "interactive (drag along an axis to filter; WebGL, slower without a GPU)",
                                    "value": "interactive"}])


def _label(text: str) -> html.Label:
    return html.Label(text, style={"margin": "0 8px 0 14px", "fontWeight": 600, "fontSize": "13px"})


def _flex(*children) -> html.Div:
    return html.Div(list(children), style={"display": "flex", "alignItems": "center", "flexWrap": "wrap",
                                           "gap": "4px", "margin": "4px 0"})


def _config_section(start: dict) -> html.Div:
    return _section("Best config", _flex(_dropdown("config-trial", start, "280px"),
                                         html.Button("Download YAML", id="download-button",
                                                     style={"marginLeft": "12px"}), dcc.Download(id="download")),
                    html.Pre(start.get(("config-yaml", "children")), id="config-yaml", style=PRE),
                    note="What `hybridlt export-best` writes for the chosen trial (by default the best trial of the "
                         "best selected group); train it with `hybridlt train --config FILE`.")


def _paired_section(start: dict) -> html.Div:
    return _section(
        "Paired comparison", _flex(_label("reference group"), _dropdown("paired-ref", start, "420px")),
        html.Div(start.get(("paired-note", "children")), id="paired-note", style=NOTE),
        _small_table("paired-table", start.get(("paired-table", "data"), []), PAIRED_COLUMNS),
        _graph("paired-delta", start, 300),
        note="Δ against the reference, paired by seed (param.seed): mean difference in percentage points with "
             "its 95% CI (t quantile) and the paired t-test p — the numbers `hybridlt ablate` prints. "
             "Select the trials of the groups to compare in the table.")


def _diagnostics_section(start: dict) -> html.Div:
    return _section(
        "Long-tail diagnostics",
        _flex(_label("trial"), _dropdown("diag-trial", start, "260px"), _label("epoch"),
              _dropdown("diag-epoch", start, "110px")),
        html.Div([html.Div(_graph(g, start, 330), style={**CELL, "flex": "1 1 380px"})
                  for g in ("confusion", "weight-norm", "posthoc")], style=ROW),
        note="Recorded by the trainer at each evaluation from the same logits: where each group's test images go, "
             "each class's classifier weight norm, and the accuracy post-hoc logit adjustment (logits − log prior) "
             "and τ-normalisation (w / ‖w‖) would give, τ = 1.")


def _notes_section(start: dict) -> html.Div:
    return _section(
        "Notes and config diff",
        _flex(_label("note on trial"), _dropdown("note-trial", start, "260px"),
              dcc.Input(id="note-tags", placeholder="tags, comma-separated", value=start.get(("note-tags", "value")),
                        style={"width": "220px", "marginLeft": "8px"}),
              html.Button("Save note", id="note-save", style={"marginLeft": "8px"}),
              html.Span(id="note-status", style={"marginLeft": "8px", "color": "#555", "fontSize": "13px"})),
        dcc.Textarea(id="note-text", value=start.get(("note-text", "value")),
                     style={"width": "100%", "height": "60px", "marginTop": "4px"}),
        _flex(_label("config diff of"), _dropdown("diff-a", start, "240px"), _label("and"),
              _dropdown("diff-b", start, "240px")),
        html.Pre(start.get(("diff-text", "children")), id="diff-text", style=PRE),
        note="A note and its tags are saved in the store (notes/<trial>.json, written atomically) and shown in the "
             "table's notes column.")


def _stores_section(caches: list[q.ResultsCache], memo: Memo, metric: str, rule: str,
                    refresh_s: float = 5.0) -> html.Div:
    """Every store given, side by side: its status, groups (mean ± 95% CI) and history."""
    cards = []
    for k, cache in enumerate(caches):
        cache.refresh(max_age_s=refresh_s)
        name = store_name(cache)
        try:
            view = view_of(cache, memo, metric, rule)
            report = gr.group_report(view.budget, view.labels, view.seeds, view.ranked[:STORE_GROUPS],
                                     view.ranked[0]) if view.ranked else pd.DataFrame()
            bars = fg.group_stats_figure(report, view.budget.note)
            hist = fg.history_figure(gr.history(view.trials, cache.started(), metric, view.mode), metric)
        except (ValueError, KeyError) as exc:
            bars = hist = fg.empty_figure(f"{name}: {exc}")
        cards.append(html.Div([html.H4(f"{k + 1}. {name}", style={"margin": "2px 0"}),
                               html.Div(status_line(cache, cache.trials()), style=NOTE),
                               dcc.Graph(id=f"store-{k}-groups", figure=bars, config=GRAPH_CONFIG),
                               dcc.Graph(id=f"store-{k}-history", figure=hist, config=GRAPH_CONFIG)],
                              style={**CELL, "flex": "1 1 560px"}))
    return _section("Stores side by side", html.Div(cards, style=ROW), section_id="stores",
                    note="Each store's best groups by the metric, under the same budget rule, and its history "
                         "(drawn when the page loads: reload to refresh). The sections below show the first store.")


def store_name(cache: q.ResultsCache) -> str:
    return ((cache.sweep_doc.get("spec") or {}).get("name")) or Path(str(cache.where)).name


def first_view(cache: q.ResultsCache, memo: Memo, metric: str, rule: str, notes: dict) -> tuple:
    """The table (columns, its first page, the selection) and every chart of the page as it opens."""
    view = view_of(cache, memo, metric, rule)
    columns = table_columns(view)
    selection = initial_selection(view, shown_frame(cache, memo, view, columns, notes))
    page = table_page(cache, memo, metric, rule, 0, [], "", selection, notes)
    return columns, page, selection, chart_values(cache, memo, selection, metric, rule)


def initial_selection(view: View, frame: pd.DataFrame) -> list[str]:
    """The best groups' trials (every seed; else the first rows), in the table's order."""
    keep = set(default_selection(view)) or set(frame["trial_id"].head(DEFAULT_SELECTED))
    return [t for t in frame["trial_id"] if t in keep]


def shown_frame(cache: q.ResultsCache, memo: Memo, view: View, columns: list[dict], notes: dict) -> pd.DataFrame:
    """``table_frame``, made once per store version, metric, rule and notes."""
    key = ("table", id(cache), cache.version, view.metric, view.budget.rule, repr(sorted(notes.items())))
    return memo.get(key, lambda: table_frame(view, columns, notes))[1]


def table_page(cache: q.ResultsCache, memo: Memo, metric: str, rule: str, page: int | None, sort_by: list | None,
               filter_query: str | None, selection: list[str], notes: dict | None = None) -> dict:
    """One page of the table, filtered and sorted (ties: best by the metric first), with the selection ticked:
    the DataTable properties to set, and a line saying how many trials match (and why a filter was not applied)."""
    view = view_of(cache, memo, metric, rule)
    frame = shown_frame(cache, memo, view, table_columns(view), cache.notes() if notes is None else notes)
    problem = ""
    try:
        shown = tb.filter_frame(frame, filter_query)
    except ValueError as exc:
        shown, problem = frame, f" · {exc} (filter not applied)"
    part, page = tb.page_of(tb.sort_frame(shown, sort_by), page)
    rows = tb.records(part)
    chosen = set(selection or [])
    ticked = [i for i, r in enumerate(rows) if r["id"] in chosen]
    matched = f"{len(shown):,} of {len(frame):,} trials" if len(shown) < len(frame) else f"{len(frame):,} trials"
    return {"data": rows, "page_count": tb.page_count(len(shown)), "page_current": page, "selected_rows": ticked,
            "selected_row_ids": [rows[i]["id"] for i in ticked],
            "note": f"{matched}, {tb.PAGE_SIZE} a page{problem}"}


def selected_note(selection: list[str] | None) -> str:
    """How many trials are ticked, on every page (kept in the browser by a clientside copy of this)."""
    return f" · {len(selection or [])} selected (they drive the charts below)"


SELECTED_NOTE_JS = "function(s) { return ' · ' + (s || []).length + ' selected (they drive the charts below)'; }"


def build_layout(caches: list[q.ResultsCache], memo: Memo, refresh_s: float = 5.0, skeleton: bool = False) -> html.Div:
    """The whole page with every chart's figure made for the best groups, selected in the filled table.

    The charts come with the page, so a first view costs one request; callbacks redraw them on
    changes. ``skeleton``: the same components without data (Dash's callback validation layout).
    """
    cache = caches[0]
    if not skeleton:  # listing a big store's folders takes a while: at most once a refresh period, ticks included
        cache.refresh(max_age_s=refresh_s)
    metrics, _ = cache.objective()
    metric = metrics[0] if metrics[0] in q.METRICS else "acc"
    rule = "final"
    start: dict = {}
    if skeleton:
        columns, page, selection = [], {}, []
    else:  # the first view is the same for every visitor until the store (or a note) changes: made once
        notes = cache.notes()
        key = ("first view", id(cache), cache.version, metric, rule, repr(sorted(notes.items())))
        kind, value = memo.get(key, lambda: first_view(cache, memo, metric, rule, notes))
        if kind == "error":
            raise ValueError(value)
        columns, page, selection, start = value
    hidden = {"display": "none"}
    stores = _stores_section(caches, memo, metric, rule, refresh_s) if len(caches) > 1 and not skeleton else \
        html.Div(id="stores", style=hidden)
    return html.Div([
        html.Div([html.H2(f"hybridlt sweep: {store_name(cache)}", style={"margin": "0"}),
                  html.Div(status_line(cache, cache.trials().head(0) if skeleton else cache.trials()), id="status",
                           style=NOTE)]),
        html.Div(cache.message, id="banner", style=_banner_style(cache.message)),
        _controls(metric, rule),
        stores,
        _section("Trials", _trials_table(columns, page), _table_notes(page, selection),
                 note="Accuracies in %. Sort and filter the columns (e.g. > 90 or psc); tick rows to drive the "
                      "charts below (a group's seeds are ticked together by default)."),
        _tabs({
            "groups": [_section("Head / medium / tail", _graph("groups", start, 400)), _paired_section(start)],
            "classes": [_section("Per-class accuracy", _pair(_graph("heatmap", start, 440),
                                                             _graph("class-rank", start, 420),
                                                             flex=("3 1 640px", "2 1 420px")))],
            "drivers": [_section("What drives accuracy", _parallel_mode(), _graph("parallel", start, 420),
                                 _pair(_graph("importance", start, 240), _graph("pareto", start, 360), "pareto-box",
                                       start.get(("pareto-box", "style"), hidden)),
                                 _graph("slices", start, 330))],
            "history": [_section("History", _graph("history", start, 340)),
                        _section("Learning curves", _graph("curves", start, 420), _graph("losses", start, 560))],
            "diagnostics": [_diagnostics_section(start)]}),
        _notes_section(start),
        _config_section(start),
        dcc.Interval(id="tick", interval=int(1000 * refresh_s), n_intervals=0),
        dcc.Store(id="version", data=cache.version),
        dcc.Store(id="selection", data=selection),
        dcc.Store(id="table-key", data=table_key(page.get("page_current", 0), [], "")),
        dcc.Store(id="notes-saved", data=0),
    ], style={"fontFamily": "system-ui, sans-serif", "background": "#f5f6f8", "padding": "12px 20px"})


# ---- what the callbacks return ----------------------------------------------------------------------
def refresh_outputs(cache: q.ResultsCache, memo: Memo, version: int | None, selection: list[str] | None,
                    metric: str, rule: str) -> tuple:
    """After a tick: the version, table columns and selection (the reader's, else the best groups') when the
    store changed; the status line always. The table's page follows the version (``table_page``)."""
    cache.refresh()
    trials = cache.trials()
    if cache.version == version:
        return (no_update,) * 3 + (status_line(cache, trials), no_update, no_update)
    view = view_of(cache, memo, metric, rule)
    columns = table_columns(view)
    kept = [t for t in selection or [] if t in view.labels.index]
    if not kept:
        kept = initial_selection(view, shown_frame(cache, memo, view, columns, cache.notes()))
    return (cache.version, columns, kept, status_line(cache, trials), cache.message, _banner_style(cache.message))


def table_key(page: int | None, sort_by: list | None, filter_query: str | None) -> list:
    """What a page of the table was cut for: the selection callback ignores the table's own clearing of its
    ticks while a new page is on its way (DataTable clears them when the page, sort or filter changes)."""
    return [int(page or 0), sort_by or [], filter_query or ""]


def selection_after_ticks(selection: list[str] | None, rows: list[dict] | None, ticked: list[str] | None,
                          key: list, shown_key: list) -> list[str] | object:
    """The selection after the reader ticked or unticked rows of the page shown (``no_update`` when it is the
    same, or when the ticks are the table clearing itself for a page not yet arrived: ``key != shown_key``)."""
    if key != shown_key:
        return no_update
    selection = list(selection or [])
    merged = tb.merge_selection(selection, [r["id"] for r in rows or []], list(ticked or []))
    return no_update if merged == selection else merged


def selection_figures(cache: q.ResultsCache, memo: Memo, selected: list[str], metric: str, rule: str) -> tuple:
    """Head/medium/tail bars, the per-class heatmap and accuracy-vs-rank, and learning curves: by group."""
    view = view_of(cache, memo, metric, rule)
    groups = view.groups_of(selected)
    colors = fg.trial_colors(groups)
    report = gr.group_report(view.budget, view.labels, view.seeds, groups, groups[0]) if groups else pd.DataFrame()
    bars = fg.group_stats_figure(report, view.budget.note)
    shown = list(dict.fromkeys(view.ranked[:HEATMAP_ROWS] + groups))
    ids = [t for g in shown for t in view.members.get(g, [])]
    per_group = gr.mean_per_class(cache.per_class_at(ids, view.budget.epoch), {g: view.members[g] for g in shown})
    heat = q.class_matrix(per_group, shown, CLASS_BINS)
    rank = q.class_matrix(per_group, groups, CLASS_BINS)
    marks = q.group_boundaries(rank, cache.group_thresholds())
    curve_ids = [t for g in groups for t in view.members.get(g, [])][:CURVE_TRIALS]
    epochs = cache.epochs(curve_ids)
    bands = gr.curve_bands(epochs, view.labels, metric)
    return (bars, fg.class_heatmap_figure(heat, groups, metric, len(view.members)),
            fg.class_rank_figure(q.class_curves(per_group, groups, CLASS_BINS), colors, marks, rank.names is None),
            fg.curve_bands_figure(bands, metric, colors), fg.curves_figure(epochs, metric, fg.trial_colors(curve_ids)))


def parallel_figure(cache: q.ResultsCache, memo: Memo, metric: str, rule: str, mode: str = "static") -> go.Figure:
    """Parallel coordinates of the hyperparameters against ``metric``, scored trials of the budget only."""
    view = view_of(cache, memo, metric, rule)
    scored = percent(view.budget.frame[view.budget.frame["scored"]])
    return fg.parallel_figure(scored, gr.hyperparams(view.params), metric, interactive=mode == "interactive",
                              note=view.budget.note)


def driver_figures(cache: q.ResultsCache, memo: Memo, metric: str, rule: str) -> tuple:
    """Importance, slices (stopped trials marked), the Pareto front (its box shown for 2 objectives), history."""
    view = view_of(cache, memo, metric, rule)
    frame = percent(view.budget.frame)
    scored, stopped = frame[frame["scored"]], frame[~frame["scored"] & frame["status"].isin(gr.STOPPED)]
    params = gr.hyperparams(view.params)
    metrics, modes = cache.objective()
    pareto, style = fg.empty_figure(""), {**CELL, "display": "none"}
    if len(metrics) > 1 and all(f"final_{m}" in scored for m in metrics[:2]):
        pareto = fg.pareto_figure(q.pareto_points(scored, metrics, modes, cache.pareto_ids()), metrics[0], metrics[1])
        style = CELL
    kind, value = memo.get(("importance", id(cache), cache.version, metric, rule),
                           lambda: q.param_importance(view.budget.frame[view.budget.frame["scored"]], metric,
                                                      view.mode))
    if kind == "error":
        importance = fg.empty_figure(value)
    else:
        left_out = [p for p in params if p not in value[0]]
        importance = fg.importance_figure(value[0], value[1], metric, left_out, view.budget.note)
    hist = fg.history_figure(gr.history(view.trials, cache.started(), metric, view.mode), metric)
    return (importance, fg.slice_figure(scored, params, metric, stopped=stopped, note=view.budget.note), pareto, style,
            hist)


def reference_group(cache: q.ResultsCache, view: View, groups: list[str]) -> str | None:
    """The ablation's reference variant when its trials are selected, else the best selected group."""
    spec = {}
    if cache.root is not None:
        loc = Location(cache.root.fs, cache.root.path.rsplit("/", 1)[0]) / "ablation.yaml"
        try:
            spec = yaml.safe_load(loc.read_bytes()) if loc.exists() else {}
        except (OSError, yaml.YAMLError):
            spec = {}
    wanted = (spec or {}).get("reference") or next(iter((spec or {}).get("variants") or {}), None)
    return wanted if wanted in groups else (groups[0] if groups else None)


def choices(cache: q.ResultsCache, memo: Memo, selected: list[str], metric: str, rule: str) -> dict:
    """The dropdowns that offer selected trials or groups, with their defaults."""
    view = view_of(cache, memo, metric, rule)
    groups = view.groups_of(selected)
    ids = [t for t in selected if t in view.labels.index]
    best_group = groups[0] if groups else None
    pool = view.trials[view.trials["trial_id"].isin(view.members.get(best_group, []))]
    best = q.best_trial_id(pool, metric, view.mode) or (ids[0] if ids else None)
    trial_opts = [{"label": t if view.labels[t] == t else f"{t} · {view.labels[t]}", "value": t} for t in ids]
    note = cache.notes().get(best, {}) if best else {}
    return {("paired-ref", "options"): [{"label": g, "value": g} for g in groups],
            ("paired-ref", "value"): reference_group(cache, view, groups),
            ("diag-trial", "options"): trial_opts, ("diag-trial", "value"): best,
            ("note-trial", "options"): trial_opts, ("note-trial", "value"): best,
            ("note-text", "value"): note.get("note", ""), ("note-tags", "value"): ", ".join(note.get("tags", [])),
            ("diff-a", "options"): trial_opts, ("diff-a", "value"): ids[0] if ids else None,
            ("diff-b", "options"): trial_opts, ("diff-b", "value"): ids[1] if len(ids) > 1 else None,
            ("config-trial", "options"): trial_opts, ("config-trial", "value"): best}


def paired_outputs(cache: q.ResultsCache, memo: Memo, selected: list[str], metric: str, rule: str,
                   reference: str | None) -> tuple[str, list[dict], go.Figure]:
    """The paired-comparison note, table rows (Δ, CI, p per group and metric) and per-class Δ heatmap."""
    view = view_of(cache, memo, metric, rule)
    groups = view.groups_of(selected)
    if gr.SEED not in view.trials:
        return ("This store has no param.seed: each configuration ran once, so there are no seeds to pair. "
                "Run an ablation (`hybridlt ablate`) or confirm the best configs with several seeds.", [],
                fg.empty_figure("no seeds to pair in this store"))
    if not reference or reference not in groups or len(groups) < 2:
        return ("Select trials of two or more groups (e.g. two variants' seeds) to compare them.", [],
                fg.empty_figure("select trials of two or more groups"))
    report = gr.group_report(view.budget, view.labels, view.seeds, groups, reference)
    ids = [t for g in groups for t in view.members.get(g, [])]
    per_class = cache.per_class_at(ids, view.budget.epoch)
    by_class, counts, _ = gr.class_report(per_class, view.budget, view.labels, view.seeds, groups, reference)
    return (view.budget.note, paired_rows(report, reference), fg.class_delta_figure(by_class, counts, reference))


def paired_rows(report: pd.DataFrame, reference: str) -> list[dict]:
    def f(v, digits=1):
        return "-" if v is None or v != v else f"{v:.{digits}f}"

    rows = []
    for r in report.to_dict("records"):
        ci = "-" if r["diff_ci95_low"] is None else f"[{f(r['diff_ci95_low'])}, {f(r['diff_ci95_high'])}]"
        rows.append({"group": r["variant"] + (" (reference)" if r["variant"] == reference else ""),
                     "metric": r["metric"], "seeds": r["n"], "mean %": f(r["mean"]),
                     "95% CI": f"[{f(r['ci95_low'])}, {f(r['ci95_high'])}]", "pairs": r["n_pairs"],
                     "Δ pp": f(r["diff_vs_ref"]), "Δ 95% CI": ci, "p (paired t)": f(r["p_paired"], 3)})
    return rows


def diagnostic_outputs(cache: q.ResultsCache, trial_id: str | None, epoch: int | None, trial_changed: bool) -> tuple:
    """The epoch choices of a trial and its three diagnostic charts at the chosen epoch (its last by default)."""
    epochs = cache.epochs([trial_id]) if trial_id else pd.DataFrame()
    if epochs.empty:
        blank = fg.empty_figure("pick a trial that has reported an epoch")
        return [], None, blank, blank, blank
    available = [int(e) for e in epochs["epoch"]]
    if trial_changed or epoch not in available:
        epoch = available[-1]
    row = epochs[epochs["epoch"] == epoch].iloc[0].to_dict()
    per_class = cache.per_class_at([trial_id], epoch).get(trial_id)
    frame = per_class.to_pandas() if per_class is not None else pd.DataFrame(columns=["weight_norm"])
    return ([{"label": str(e), "value": e} for e in available], epoch, fg.confusion_figure(row),
            fg.weight_norm_figure(frame), fg.posthoc_figure(row))


def diff_text(cache: q.ResultsCache, a: str | None, b: str | None) -> str:
    """The resolved-config keys where two trials differ, one per line."""
    if not a or not b or a == b:
        return "pick two different trials"
    trials = cache.trials().set_index("trial_id")
    if a not in trials.index or b not in trials.index:
        return "a running trial has no stored config yet"
    diff = gr.config_diff(trials.loc[a].to_dict(), trials.loc[b].to_dict())
    if not diff:
        return f"{a} and {b} were trained with the same config"
    width = max(len(k) for k, _, _ in diff)
    return "\n".join([f"{'key':<{width}}  {a}  |  {b}", *[f"{k:<{width}}  {va}  |  {vb}" for k, va, vb in diff]])


def chart_values(cache: q.ResultsCache, memo: Memo, selected: list[str], metric: str, rule: str,
                 mode: str = "static") -> dict[tuple[str, str], object]:
    """Every chart's ``(component id, property)`` value for a selection, metric and rule: the first view."""
    bars, heat, rank, curves, losses = selection_figures(cache, memo, selected, metric, rule)
    importance, slices, pareto, pareto_style, hist = driver_figures(cache, memo, metric, rule)
    out = choices(cache, memo, selected, metric, rule)
    note, paired, delta = paired_outputs(cache, memo, selected, metric, rule, out[("paired-ref", "value")])
    opts, epoch, confusion, norms, posthoc = diagnostic_outputs(cache, out[("diag-trial", "value")], None, True)
    return out | {("groups", "figure"): bars, ("heatmap", "figure"): heat, ("class-rank", "figure"): rank,
                  ("curves", "figure"): curves, ("losses", "figure"): losses,
                  ("importance", "figure"): importance, ("slices", "figure"): slices,
                  ("pareto", "figure"): pareto, ("pareto-box", "style"): pareto_style, ("history", "figure"): hist,
                  ("parallel", "figure"): parallel_figure(cache, memo, metric, rule, mode),
                  ("paired-note", "children"): note, ("paired-table", "data"): paired,
                  ("paired-delta", "figure"): delta, ("diag-epoch", "options"): opts, ("diag-epoch", "value"): epoch,
                  ("confusion", "figure"): confusion, ("weight-norm", "figure"): norms,
                  ("posthoc", "figure"): posthoc,
                  ("diff-text", "children"): diff_text(cache, out[("diff-a", "value")], out[("diff-b", "value")]),
                  ("config-yaml", "children"): config_yaml(cache, memo, out[("config-trial", "value")], metric)}


CHOICE_OUTPUTS = ("paired-ref", "diag-trial", "diff-a", "diff-b", "config-trial")


def register_callbacks(app: Dash, cache: q.ResultsCache, memo: Memo) -> None:
    """Wire the table, the metric, the budget rule and the refresh tick to the charts (drawn with the page)."""
    sel = Input("selection", "data")
    ver, met, bud = Input("version", "data"), Input("metric", "value"), Input("budget", "value")
    later = {"prevent_initial_call": True}
    register_table_callbacks(app, cache, memo)

    app.callback(Output("groups", "figure"), Output("heatmap", "figure"), Output("class-rank", "figure"),
                 Output("curves", "figure"), Output("losses", "figure"), ver, sel, met, bud, **later)(
        lambda _, ids, metric, rule: selection_figures(cache, memo, list(ids or []), metric, rule))
    app.callback(Output("parallel", "figure"), ver, met, bud, Input("parallel-mode", "value"), **later)(
        lambda _, metric, rule, mode: parallel_figure(cache, memo, metric, rule, mode))
    app.callback(Output("importance", "figure"), Output("slices", "figure"), Output("pareto", "figure"),
                 Output("pareto-box", "style"), Output("history", "figure"), ver, met, bud, **later)(
        lambda _, metric, rule: driver_figures(cache, memo, metric, rule))

    outs = [Output(i, p) for i in CHOICE_OUTPUTS for p in ("options", "value")]

    @app.callback(*outs, ver, sel, met, bud, **later)
    def pick(_, ids, metric, rule):
        out = choices(cache, memo, list(ids or []), metric, rule)
        return tuple(out[(i, p)] for i in CHOICE_OUTPUTS for p in ("options", "value"))

    app.callback(Output("paired-note", "children"), Output("paired-table", "data"), Output("paired-delta", "figure"),
                 Input("paired-ref", "value"), ver, sel, met, bud, **later)(
        lambda ref, _, ids, metric, rule: paired_outputs(cache, memo, list(ids or []), metric, rule, ref))

    @app.callback(Output("diag-epoch", "options"), Output("diag-epoch", "value"), Output("confusion", "figure"),
                  Output("weight-norm", "figure"), Output("posthoc", "figure"), Input("diag-trial", "value"),
                  Input("diag-epoch", "value"), **later)
    def diagnostics(trial_id, epoch):
        return diagnostic_outputs(cache, trial_id, epoch, ctx.triggered_id == "diag-trial")

    @app.callback(Output("note-text", "value"), Output("note-tags", "value"), Input("note-trial", "value"), **later)
    def load_note(trial_id):
        note = cache.notes().get(trial_id or "", {})
        return note.get("note", ""), ", ".join(note.get("tags", []))

    @app.callback(Output("note-status", "children"), Output("notes-saved", "data"), Input("note-save", "n_clicks"),
                  State("note-trial", "value"), State("note-text", "value"), State("note-tags", "value"), **later)
    def save_note(clicks, trial_id, text, tags):
        if not trial_id:
            return "pick a trial first", no_update
        try:
            write_note(cache.root, trial_id, text or "", (tags or "").split(","))
        except (StoreError, OSError) as exc:
            return f"not saved: {exc}", no_update
        return f"saved {time.strftime('%H:%M:%S')} to notes/{trial_id}.json", clicks  # the table shows it

    app.callback(Output("diff-text", "children"), Input("diff-a", "value"), Input("diff-b", "value"), **later)(
        lambda a, b: diff_text(cache, a, b))
    app.callback(Output("config-yaml", "children"), Input("config-trial", "value"), met, **later)(
        lambda trial_id, metric: config_yaml(cache, memo, trial_id, metric))

    @app.callback(Output("download", "data"), Input("download-button", "n_clicks"), State("config-trial", "value"),
                  State("metric", "value"), prevent_initial_call=True)
    def download(_, trial_id, metric):
        if not trial_id:
            return no_update
        return dcc.send_string(config_yaml(cache, memo, trial_id, metric), filename=f"{trial_id}-best.yaml")


TABLE_PAGE = ("data", "page_count", "page_current", "selected_rows", "selected_row_ids")
RESET_PAGE = {"trials.sort_by", "trials.filter_query", "metric.value", "budget.value"}


def register_table_callbacks(app: Dash, cache: q.ResultsCache, memo: Memo) -> None:
    """The refresh tick, the table's pages (cut by the server) and the selection (ticks merged across pages)."""
    later = {"prevent_initial_call": True}
    table = [State("trials", "page_current"), State("trials", "sort_by"), State("trials", "filter_query")]

    @app.callback(Output("version", "data"), Output("trials", "columns"), Output("selection", "data"),
                  Output("status", "children"), Output("banner", "children"), Output("banner", "style"),
                  Input("tick", "n_intervals"), State("version", "data"), State("selection", "data"),
                  State("metric", "value"), State("budget", "value"), **later)
    def refresh(_, version, selection, metric, rule):
        return refresh_outputs(cache, memo, version, selection, metric, rule)

    @app.callback(*[Output("trials", p) for p in TABLE_PAGE], Output("table-key", "data"),
                  Output("table-note", "children"), Input("trials", "page_current"), Input("trials", "sort_by"),
                  Input("trials", "filter_query"), Input("version", "data"), Input("metric", "value"),
                  Input("budget", "value"), Input("notes-saved", "data"), State("selection", "data"), **later)
    def page(page, sort_by, filter_query, _, metric, rule, _saved, selection):
        if RESET_PAGE & set(ctx.triggered_prop_ids):
            page = 0  # a new order or filter starts at its first page; a new version keeps the reader's page
        out = table_page(cache, memo, metric, rule, page, sort_by, filter_query, selection)
        return (*[out[p] for p in TABLE_PAGE], table_key(out["page_current"], sort_by, filter_query), out["note"])

    app.clientside_callback(SELECTED_NOTE_JS, Output("selected-note", "children"), Input("selection", "data"),
                            **later)

    @app.callback(Output("selection", "data", allow_duplicate=True), Input("trials", "selected_row_ids"),
                  State("trials", "data"), *table, State("table-key", "data"), State("selection", "data"), **later)
    def select(ticked, rows, page, sort_by, filter_query, shown, selection):
        return selection_after_ticks(selection, rows, ticked, table_key(page, sort_by, filter_query), shown)


def config_yaml(cache: q.ResultsCache, memo: Memo, trial_id: str | None, metric: str) -> str:
    """The export-best YAML of ``trial_id`` (its group's mean over seeds noted first), or why there is none."""
    if not trial_id:
        return "no trial yet"
    try:
        text = q.export_yaml(cache.trials(), trial_id, cache.root, metric)
    except (KeyError, ValueError) as exc:
        return f"trial {trial_id}: {exc.args[0] if exc.args else exc}"
    view = view_of(cache, memo, metric, "final")
    group = view.labels.get(trial_id)
    n = len(view.members.get(group, []))
    if n > 1:
        report = gr.group_report(view.budget, view.labels, view.seeds, [group], group, (metric,))
        r = report.iloc[0]
        text = (f"# group {group}: {r['mean']:.1f}% mean {metric} over {r['n']} completed seeds "
                f"(95% CI {r['ci95_low']:.1f}–{r['ci95_high']:.1f}); this file is one of its seeds' configs\n" + text)
    return text


# ---- entry points -----------------------------------------------------------------------------------
Results = str | Path | Location


def create_app(results: Results | list[Results], refresh_s: float = 5.0) -> Dash:
    """The Dash app over one store or several side by side (each a results folder or the sweep folder above it).

    Raises ``StoreError`` when a path does not exist; an existing path that holds no results yet
    serves a page saying so, which fills in when the sweep writes.
    """
    return _build(results, refresh_s)[0]


def _build(results: Results | list[Results], refresh_s: float) -> tuple[Dash, list[q.ResultsCache]]:
    paths = list(results) if isinstance(results, list | tuple) else [results]
    for path in paths:
        if not Location.of(path).exists():
            raise StoreError(f"RESULTS: {path} does not exist; give a sweep's results folder "
                             f"(e.g. runs/sweeps/NAME/results) or the sweep folder above it")
    caches = [q.ResultsCache(p) for p in paths]
    for cache in caches:
        cache.refresh()
    app = Dash(__name__, title="hybridlt dashboard", update_title=None)
    # Dash would otherwise embed a first full layout (the whole trials table) in every page as its
    # callback-validation layout: the same components without data do.
    memo = Memo()
    app.validation_layout = build_layout(caches, memo, refresh_s, skeleton=True)
    app.layout = lambda: build_layout(caches, memo, refresh_s)
    register_callbacks(app, caches[0], memo)
    threading.Thread(target=_warm, args=(caches, memo, refresh_s), daemon=True).start()
    return app, caches


def _warm(caches: list[q.ResultsCache], memo: Memo, refresh_s: float) -> None:
    """The first page's slow steps while nobody waits: per-class files and importance.
    Best effort: a failure here happens again, and is shown, when the page asks."""
    try:
        build_layout(caches, memo, refresh_s)
    except Exception as exc:  # noqa: BLE001
        logging.getLogger(__name__).debug("warm-up failed: %s", exc)


def check_listen(host: str, port: int) -> None:
    """Refuse, in one line, an address the server cannot listen on: a port outside 1 .. 65535 (Dash
    takes 0 for its default 8050), a host that does not resolve or is not this machine's, a port in
    use. The socket is bound and released as werkzeug binds it (``SO_REUSEADDR``, same family)."""
    if not 1 <= port <= 65535:
        raise InputError(f"--port: {port}; allowed: 1 .. 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, socket.IPPROTO_TCP)[0][4]
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"--host: {host!r} does not resolve ({getattr(exc, 'strerror', None) or exc}); "
                         f"allowed: an address or host name of this machine (default 127.0.0.1)") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"--port: {port} on {host} is in use by another program; allowed: a free "
                                 f"port") from None
            raise InputError(f"--host/--port: cannot listen on {host} port {port} ({exc.strerror or exc}); "
                             f"allowed: an address of this machine and a port this user may open") from None


def run_dashboard(results: Results | list[Results], host: str = "127.0.0.1", port: int = 8050,
                  refresh_s: float = 5.0) -> None:
    """Serve the dashboard until Ctrl-C; binds the loopback interface unless ``host`` says otherwise."""
    check_listen(host, port)
    app, caches = _build(results, refresh_s)
    for cache in caches:
        if cache.message:
            print(f"warning: {cache.message}")
        else:
            print(f"dashboard of {cache.root}: {len(cache.trials())} trials")
    print(f"open http://{host}:{port}/ (Ctrl-C to stop)")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app.run(host=host, port=port, debug=False)


