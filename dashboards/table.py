"""The trials table served a page at a time: the browser holds one page of rows, whatever the store's size.

Filtering, sorting and paging happen here (DataTable's ``filter_action``, ``sort_action`` and
``page_action`` set to ``"custom"``), on a frame of every trial as the table shows it (accuracies in %,
rounded as shown). The selection is a list of trial ids kept apart from the table (a ``dcc.Store``),
so ticks on one page survive paging, sorting and filtering.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

PAGE_SIZE = 12

# one column filter as DataTable writes it: ``{col} op value``; ``i``/``s``: case-insensitive/-sensitive
_PART = re.compile(r"^\s*\{(?P<col>[^}]+)\}\s*(?P<op>is blank|is nil|is num|is str|datestartswith|"
                   r"[is]?(?:contains|!=|<=|>=|=|<|>|eq|ne|le|ge|lt|gt)(?=[\s\"'`\d\-.+]|$))\s*(?P<value>.*)$", re.I)
_WORDS = {"eq": "=", "ne": "!=", "le": "<=", "ge": ">=", "lt": "<", "gt": ">"}


def parse_filter(query: str | None) -> list[tuple[str, str, bool, str]]:
    """``(column, operator, case_sensitive, value)`` per part of a DataTable filter query (parts joined by
    ``&&`` or ``and``, the only joint the column filters write). Raises ValueError on a part it cannot read."""
    out = []
    for part in re.split(r"\s+(?:&&|and)\s+", (query or "").strip(), flags=re.I):
        if not part.strip():
            continue
        m = _PART.match(part)
        if m is None:
            raise ValueError(f"cannot read the filter {part!r}")
        op = m["op"].lower()
        sensitive = op.startswith("s") and op != "is str"
        if op[:1] in "is" and not op.startswith("is "):
            op = op[1:]
        value = m["value"].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
            value = value[1:-1]
        out.append((m["col"], _WORDS.get(op, op), sensitive, value))
    return out


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _mask(column: pd.Series, op: str, sensitive: bool, value: str) -> pd.Series:
    """Rows of ``column`` that pass one filter part."""
    blank = column.isna() | (column.astype(str).str.strip() == "")
    if op in ("is blank", "is nil"):
        return blank
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    if op == "is num":
        return pd.Series(numeric, index=column.index) & ~blank
    if op == "is str":
        return pd.Series(not numeric, index=column.index) & ~blank
    number = _number(value)
    if numeric and number is not None and op != "contains" and op != "datestartswith":
        v = pd.to_numeric(column, errors="coerce")
        hits = {"=": v == number, "!=": v != number, "<": v < number, "<=": v <= number, ">": v > number,
                ">=": v >= number}[op]
        return hits.fillna(op == "!=").astype(bool)
    text = column.astype(object).where(~column.isna(), "").astype(str)
    want = value
    if not sensitive:
        text, want = text.str.lower(), value.lower()
    if op == "contains":
        return ~blank & text.str.contains(want, regex=False)
    if op == "datestartswith":
        return ~blank & text.str.startswith(want)
    return {"=": text == want, "!=": text != want, "<": text < want, "<=": text <= want, ">": text > want,
            ">=": text >= want}[op] & (~blank | (op == "!="))


def filter_frame(frame: pd.DataFrame, query: str | None) -> pd.DataFrame:
    """The rows of ``frame`` that pass the filter query; a part on an unknown column matches nothing."""
    keep = pd.Series(True, index=frame.index)
    for col, op, sensitive, value in parse_filter(query):
        keep &= _mask(frame[col], op, sensitive, value) if col in frame else False
    return frame[keep]


def sort_frame(frame: pd.DataFrame, sort_by: list[dict] | None) -> pd.DataFrame:
    """``frame`` by DataTable's ``sort_by`` (first entry first; blanks last either way), stable: ties keep the
    order ``frame`` came in (best by the chosen metric first)."""
    keys = [s for s in sort_by or [] if s.get("column_id") in frame]
    if not keys:
        return frame
    order = np.arange(len(frame))
    for s in reversed(keys):  # least significant key first, each sort stable
        col = frame[s["column_id"]].iloc[order]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            col = col.astype(object).where(col.notna(), None).map(lambda v: None if v is None else str(v).lower())
        ranked = col.reset_index(drop=True).sort_values(ascending=s.get("direction") != "desc", kind="stable",
                                                        na_position="last")
        order = order[ranked.index.to_numpy()]
    return frame.iloc[order]


def page_count(n_rows: int, size: int = PAGE_SIZE) -> int:
    return max(1, math.ceil(n_rows / size))


def page_of(frame: pd.DataFrame, page: int | None, size: int = PAGE_SIZE) -> tuple[pd.DataFrame, int]:
    """One page of ``frame`` and its number (``page`` clamped to the pages there are)."""
    page = min(max(int(page or 0), 0), page_count(len(frame), size) - 1)
    return frame.iloc[page * size:(page + 1) * size], page


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as DataTable takes them: blanks as None, each with its ``id`` (the trial id)."""
    frame = frame.astype(object)
    frame = frame.where(frame.notna(), None)
    return [{**r, "id": r["trial_id"]} for r in frame.to_dict("records")]


def round_shown(frame: pd.DataFrame) -> pd.DataFrame:
    """Float columns at 4 significant digits, as the browser gets them (and the filters compare)."""
    out = frame.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(lambda v: float(f"{v:.4g}") if pd.notna(v) else v)
    return out


def merge_selection(selection: list[str], page_ids: list[str], ticked: list[str]) -> list[str]:
    """The selection after the reader ticked ``ticked`` among the rows ``page_ids`` of one page: ids on other
    pages are kept, in order; newly ticked ones go last."""
    page, ticked_set = set(page_ids), set(ticked)
    kept = [t for t in selection if t not in page or t in ticked_set]
    return kept + [t for t in ticked if t not in set(kept)]
