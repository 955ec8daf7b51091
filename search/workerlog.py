"""How a worker logs: one line per event on stderr, and no traceback for what it reports itself.

Optuna logs every failed trial with the exception's traceback. A trial cut short by a stop (SIGTERM) and
one broken by the setup (e.g. an artifact store that cannot be written) are not bugs: the worker says
what happened in one line, so Optuna's traceback and its "failed with value None" line are dropped.
"""

from __future__ import annotations

import logging
import re
import sys

import optuna

from data.errors import HpoError
from search.objective import TrialAborted

# Optuna's two lines for a failed trial: "Trial 3 failed with parameters: ..." and "... with value None."
_FAILED = re.compile(r"Trial (\d+) failed with ")


class OwnFailures(logging.Filter):
    """Drops Optuna's records of trials that failed with an exception the worker reports itself."""

    def __init__(self) -> None:
        super().__init__()
        self._dropped: set[str] = set()  # trial numbers whose first record was dropped

    def filter(self, record: logging.LogRecord) -> bool:
        match = _FAILED.match(record.getMessage())
        if match is None:
            return True
        number = match[1]
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, TrialAborted | HpoError):
            self._dropped.add(number)
            return False
        if error is None and number in self._dropped:
            self._dropped.discard(number)
            return False
        return True


def configure_logging(index: int) -> None:
    """One line per event on stderr, tagged with the worker index; Optuna's own chatter off."""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s hpo worker {index}: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optimize = logging.getLogger("optuna.study._optimize")  # where Optuna logs a trial's failure
    if not any(isinstance(f, OwnFailures) for f in optimize.filters):
        optimize.addFilter(OwnFailures())
    # Each trial builds new tf.functions by design, so TensorFlow's retracing warnings are noise here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
