"""The demo flow (`hpo demo`): the whole service on one machine, with SQLite, a real face network and real
images.

Each step runs the real ``hpo`` command in its own process, as the compose services do, and its command
line is shown so the user can rerun any step by hand (`search.demo.steps`). A rerun reuses the finished
embedding cache and starts the ``demo`` study afresh: the previous study database, stored heads and
exports are deleted first (they all live in the demo directory, which the demo owns). It ends with a
table (`search.demo.results`): the paper's Table II head, trained in the same study as trial 0, beside
the best searched head on the held-out test split, and the paper's published figures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from model.bases import KERAS_BASE
from search.demo.layout import (
    DemoLayout,
    DemoOptions,
    check_port,
    check_writable,
    choose_dataset,
    layout_for,
    reset_outputs,
)
from search.demo.results import outputs_summary, results_table
from search.demo.steps import (
    StepFailed,
    StepRunner,
    elapsed,
    export_steps,
    paper_head_stored,
    run_step,
    search_steps,
    serve_dashboard,
)

__all__ = ["DemoLayout", "DemoOptions", "StepFailed", "layout_for", "reset_outputs", "run_demo", "run_step"]


def run_demo(
    workdir: Path,
    dataset: Path | None,
    options: DemoOptions,
    echo: Callable[[str], None],
    echo_err: Callable[[str], None],
) -> None:
    """`hpo demo`: every step in ``workdir/demo`` on ``dataset`` (see `choose_dataset`), then where each
    output went and the closing table; with ``options.dashboard``, then the dashboard until Ctrl-C.
    StepFailed when a step fails (it has said why on stderr)."""
    check_port(options.port)
    check_writable(workdir / "demo")
    chosen = choose_dataset(dataset)
    layout = layout_for(workdir / "demo", chosen.root, options)
    echo(f"hpo demo: dataset: {chosen.description}, at most {options.limit} rows per split")
    for note in (chosen.note, _base_note(options)):
        if note:
            echo(f"note: {note}")
    removed = reset_outputs(layout)
    if removed:
        echo(f"hpo demo: starting afresh: removed the last run's {', '.join(removed)}; the cache is kept")
    searching = search_steps(layout, chosen.root, options)
    exporting = len(export_steps(layout, options, paper_head_stored=True))
    runner = StepRunner(len(searching) + exporting, echo, echo_err)
    runner.run(searching)
    runner.run(export_steps(layout, options, paper_head_stored=paper_head_stored(layout)))
    echo(f"\nhpo demo: finished in {elapsed(runner.started)} on {chosen.description}")
    notes = [f"note: {chosen.note}"] if chosen.note else []
    for line in [*outputs_summary(layout, options.port), "", *results_table(layout), *notes]:
        echo(line)
    if options.dashboard:
        serve_dashboard(layout, options.port, echo)


def _base_note(options: DemoOptions) -> str | None:
    if options.base == KERAS_BASE and (options.weights or "").startswith("random:"):
        return (
            f"the vggface base has random weights ({options.weights}), so its accuracies mean nothing; "
            "drop --base for the demo's real face network (dlib-resnet)."
        )
    return None
