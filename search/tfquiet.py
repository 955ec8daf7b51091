"""Import TensorFlow without its C++ start-up notices, so every user error stays one line on stderr.

TensorFlow 2.21 writes its oneDNN and CPU-feature notices to file descriptor 2 while its libraries
load, before any log level applies: ``TF_CPP_MIN_LOG_LEVEL`` does not reach them. Commands that need
TensorFlow call :func:`import_tensorflow_quietly` first; importing this module loads nothing heavy.
"""

from __future__ import annotations

import os
import sys


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at /dev/null while it loads; later notices off.

    Idempotent; later imports of ``tensorflow`` or ``keras`` then find it loaded and print nothing.
    """
    if "tensorflow" in sys.modules:
        return
    # The log level silences what TensorFlow writes after start-up, read once as it loads: 3 drops its
    # C++ errors too (e.g. libjpeg's "Premature end of JPEG data" for each bad image), which only repeat
    # what the one-line error says. An explicit 0 or 1 (debugging TensorFlow itself) is kept.
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") not in ("0", "1"):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
