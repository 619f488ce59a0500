"""The trials table cut by the server: DataTable's filter queries, sorting, pages and the selection across pages."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from dashstores import known_store

from hybridlt.dashboards import app as A
from hybridlt.dashboards import queries as q
from hybridlt.dashboards import table as tb


@pytest.fixture
def frame():
    return pd.DataFrame({"trial_id": ["a", "b", "c", "d", "e"], "final_acc": [90.5, 42.0, math.nan, 65.0, 90.5],
                         "param.loss.contrastive": ["PSC", "sc", "mpsc", None, "psc"],
                         "notes": [None, "#tail odd", None, None, ""]})


def test_filter_queries_as_the_column_filters_write_them():
    assert tb.parse_filter('{final_acc} > 90 && {param.loss.contrastive} icontains psc') == [
        ("final_acc", ">", False, "90"), ("param.loss.contrastive", "contains", False, "psc")]
    assert tb.parse_filter('{status} s= "completed" and {notes} is blank') == [
        ("status", "=", True, "completed"), ("notes", "is blank", False, "")]
    assert tb.parse_filter("{final_acc} ge 50") == [("final_acc", ">=", False, "50")]
    assert tb.parse_filter("") == [] and tb.parse_filter(None) == []
    with pytest.raises(ValueError, match="cannot read"):
        tb.parse_filter("final_acc > 90")


def test_filters_compare_numbers_as_numbers_and_text_without_case(frame):
    def ids(query):
        return tb.filter_frame(frame, query)["trial_id"].tolist()

    assert ids("{final_acc} > 60") == ["a", "d", "e"] and ids("{final_acc} = 42") == ["b"]
    assert ids("{final_acc} != 42") == ["a", "c", "d", "e"]  # a blank is not 42
    assert ids("{param.loss.contrastive} icontains psc") == ["a", "c", "e"]
    assert ids("{param.loss.contrastive} s= psc") == ["e"] and ids("{param.loss.contrastive} = PSC") == ["a", "e"]
    assert ids("{notes} is blank") == ["a", "c", "d", "e"] and ids("{final_acc} is blank") == ["c"]
    assert ids("{final_acc} > 60 && {param.loss.contrastive} contains psc") == ["a", "e"]
    assert ids("{no_such_column} > 1") == []


def test_sorting_is_stable_multi_column_and_puts_blanks_last(frame):
    def ids(sort_by):
        return tb.sort_frame(frame, sort_by)["trial_id"].tolist()

    assert ids([{"column_id": "final_acc", "direction": "desc"}]) == ["a", "e", "d", "b", "c"]
    assert ids([{"column_id": "final_acc", "direction": "asc"}]) == ["b", "d", "a", "e", "c"]
    assert ids([{"column_id": "param.loss.contrastive", "direction": "asc"}]) == ["c", "a", "e", "b", "d"]
    assert ids([{"column_id": "final_acc", "direction": "desc"},
                {"column_id": "trial_id", "direction": "desc"}]) == ["e", "a", "d", "b", "c"]
    assert ids([]) == ids(None) == list("abcde")


def test_pages_are_clamped_and_counted():
    frame = pd.DataFrame({"trial_id": [f"t{i}" for i in range(30)]})
    part, page = tb.page_of(frame, 5, 12)
    assert page == 2 and part["trial_id"].tolist() == [f"t{i}" for i in range(24, 30)]
    assert tb.page_of(frame, -1, 12)[1] == 0 and tb.page_count(30, 12) == 3 and tb.page_count(0) == 1


def test_ticks_on_one_page_keep_the_selection_on_others():
    assert tb.merge_selection(["a", "x", "b"], ["a", "b", "c"], ["b", "c"]) == ["x", "b", "c"]
    assert tb.merge_selection(["x"], ["a", "b"], []) == ["x"]
    key = A.table_key(1, [], "")
    assert A.selection_after_ticks(["x", "a"], [{"id": "a"}], [], key, key) == ["x"]
    assert A.selection_after_ticks(["x", "a"], [{"id": "a"}], ["a"], key, key) is A.no_update  # unchanged
    # the table clears its ticks itself when the page changes, before the new page arrives: ignored
    assert A.selection_after_ticks(["x", "a"], [{"id": "a"}], [], A.table_key(2, [], ""), key) is A.no_update


def test_table_page_filters_sorts_and_ticks_the_selection(tmp_path):
    known_store(tmp_path / "results")
    cache = q.ResultsCache(tmp_path / "results")
    cache.refresh()
    memo = A.Memo()
    page = A.table_page(cache, memo, "acc", "final", 0, [{"column_id": "final_acc", "direction": "asc"}],
                        "{final_acc} > 20", ["t2", "t3"])
    assert [r["id"] for r in page["data"]] == ["t1", "t2"] and page["selected_row_ids"] == ["t2"]
    assert page["selected_rows"] == [1] and page["page_count"] == 1
    assert "2 of 3 trials" in page["note"] and "2 selected" in A.selected_note(["t2", "t3"])
    broken = A.table_page(cache, memo, "acc", "final", 0, [], "final_acc >", [])
    assert len(broken["data"]) == 3 and "filter not applied" in broken["note"]
