from __future__ import annotations

import logging
import sys

from search.errors import SetupError
from search.objective import TrialAborted
from search.workerlog import OwnFailures


def failed(number: int, error: BaseException | None) -> logging.LogRecord:
    """Optuna's first record of a failed trial (with the exception) or, for None, its second."""
    message = f"Trial {number} failed with " + ("parameters: {}" if error else "value None.")
    info = (type(error), error, None) if error else None
    return logging.LogRecord("optuna.study._optimize", logging.WARNING, __file__, 1, message, None, info)


def test_own_failures_drops_stops_and_setup_errors_keeps_head_failures() -> None:
    keep = OwnFailures()
    assert not keep.filter(failed(3, TrialAborted(3, 1)))
    assert not keep.filter(failed(3, None))  # its "failed with value None." line goes with it
    assert not keep.filter(failed(4, SetupError("store gone", trial=4)))
    assert not keep.filter(failed(4, None))
    # A head that fails by itself is a bug to see: traceback and value line stay.
    assert keep.filter(failed(5, ValueError("nan loss")))
    assert keep.filter(failed(5, None))
    other = logging.LogRecord("optuna", logging.INFO, __file__, 1, "Trial 6 finished", None, sys.exc_info())
    assert keep.filter(other)
