"""The frozen bases, the head, its training over cached vectors, metrics, export and reports.

May import ``data``; never imports Optuna or ``search``."""
