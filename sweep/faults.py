"""Fault injection for the interruption tests (no effect unless the variable is set).

``HYBRIDLT_FAULT_PAUSE=moment:marker`` makes the process that reaches ``moment`` write ``marker``
(its pid) and wait there ``HYBRIDLT_FAULT_PAUSE_S`` seconds (60), once, so that a test can signal
it at exactly that point. Moments: ``start_ray``, ``before_trials``, ``trial_start``, ``write_row``,
``final_table``, ``export``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def pause_at(moment: str) -> None:
    spec = os.environ.get("HYBRIDLT_FAULT_PAUSE")
    if not spec:
        return
    at, marker = spec.split(":", 1)
    if at == moment and not os.path.exists(marker):
        Path(marker).write_text(f"{moment} {os.getpid()}\n")
        time.sleep(float(os.environ.get("HYBRIDLT_FAULT_PAUSE_S", "60")))
