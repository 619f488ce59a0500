"""The driver killed at every moment of a sweep, each signal at least once, then ``--resume``:
in the end every planned trial appears once, with all its epochs once, and the files of trials
that had finished before the kill are untouched (bytes and mtimes). Real local Ray, real CLI.

The whole matrix (7 moments x 5 signals) runs with ``python -m tests.sweep.kill_cases``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from tests.sweep.kill_cases import TRIALS, run_case  # noqa: E402

# each moment once, each signal at least once
CASES = [
    ("start_ray", "term"),
    ("before_trials", "int2"),
    ("trial_start", "kill_driver"),
    ("mid_trial", "int1"),
    ("write_row", "kill_group"),
    ("final_table", "int1"),
    ("export", "kill_group"),
]


@pytest.mark.parametrize(("moment", "how"), CASES, ids=[f"{m}-{h}" for m, h in CASES])
def test_resume_recovers_from_a_kill(tmp_path, moment, how):
    out = run_case(tmp_path, moment, how)
    detail = f"{out.line()}\nfirst run:\n{out.first_stderr[-1500:]}\nresume:\n{out.resume_stderr[-1500:]}"
    assert out.resume_rc == 0, detail
    assert out.statuses == {"completed": TRIALS}, detail
    assert (out.lost, out.duplicated, out.rerun, out.epoch_dups, out.incomplete) == (0, 0, 0, 0, 0), detail
    if how in ("int1", "int2", "term") and moment not in ("final_table", "export"):
        # a signal the driver can catch: it says exactly how to continue
        assert "--resume" in out.first_stderr and "hybridlt sweep" in out.first_stderr, detail
