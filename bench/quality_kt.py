"""KerasTuner, the peer a Keras user would pick, over the same space, losses and objective (bench/quality.py).

The TOML space is translated parameter by parameter into KerasTuner hyperparameters, all declared before
the search (``n_layers`` and per-layer ``units_i``/``activation_i``/``dropout_i`` for every possible layer),
so RandomSearch samples every trial from the whole space; a trial builds the head with the product's
``build_head`` and trains it the Keras way, ``model.fit`` with the class-weighted ``head_losses``. The
objective is the search's own: mean validation balanced accuracy of the three heads, computed after every
epoch by a callback and stored in the epoch's logs, where KerasTuner, its best-epoch checkpoint and early
stopping (patience 5) read it.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
from quality_data import head_predictions, scores
from quality_search import PATIENCE, SearchOutcome, bench_space

from data.labels import HEADS, VOCABULARIES
from model.fitting import build_optimizer, class_weights, head_losses
from model.head import HeadConfig, LayerSpec
from model.metrics import mean_metric
from model.network import build_head
from search.space import PER_LAYER, Choice, Param, Range, Space

OBJECTIVE = "val_balanced_accuracy"
OPTIONS = ("learning_rate", "batch_size", "class_weight_strength", "optimizer")


def declare(hp: kt.HyperParameters, name: str, param: Param) -> None:
    """One space parameter as the KerasTuner hyperparameter that draws the same values."""
    if isinstance(param, Choice):
        hp.Choice(name, list(param.choices))
        return
    assert isinstance(param, Range)
    sampling = "log" if param.log else "linear"
    if param.integer:
        step = None if param.step is None else int(param.step)
        hp.Int(name, int(param.low), int(param.high), step=step, sampling=sampling)
    else:
        hp.Float(name, param.low, param.high, step=param.step, sampling=sampling)


def max_layers(space: Space) -> int:
    """The largest ``n_layers`` the space allows."""
    param = space.params["n_layers"]
    return int(param.high) if isinstance(param, Range) else max(int(value) for value in param.choices)


def space_hyperparameters(space: Space) -> kt.HyperParameters:
    """The whole space as KerasTuner hyperparameters (layers beyond ``n_layers`` are drawn but unused)."""
    hp = kt.HyperParameters()
    declare(hp, "n_layers", space.params["n_layers"])
    for index in range(max_layers(space)):
        for key in PER_LAYER:
            declare(hp, f"{key}_{index}", space.params[key])
    for key in OPTIONS:
        declare(hp, key, space.params[key])
    return hp


def config_of(hp: kt.HyperParameters) -> HeadConfig:
    """The head config of a trial's values (grid floats rounded: KerasTuner gives 0.30000000000000004)."""
    layers = tuple(
        LayerSpec(
            units=int(hp.get(f"units_{i}")),
            activation=str(hp.get(f"activation_{i}")),
            dropout=round(float(hp.get(f"dropout_{i}")), 6),
        )
        for i in range(int(hp.get("n_layers")))
    )
    return HeadConfig(
        layers=layers,
        learning_rate=float(hp.get("learning_rate")),
        batch_size=int(hp.get("batch_size")),
        class_weight_strength=round(float(hp.get("class_weight_strength")), 6),
        optimizer=str(hp.get("optimizer")),
    )


class HeadHyperModel(kt.HyperModel):
    """Builds and fits the product's head for a trial's hyperparameters."""

    def __init__(self, dim: int, train_labels: np.ndarray) -> None:
        super().__init__()
        self.dim, self.train_labels = dim, train_labels

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        config = config_of(hp)
        weights = {
            head: class_weights(
                self.train_labels[:, column], len(VOCABULARIES[head]), config.class_weight_strength
            )
            for column, head in enumerate(HEADS[:2])
        }
        model = build_head(config, self.dim)
        model.compile(optimizer=build_optimizer(config), loss=head_losses(weights))
        return model

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        return model.fit(*args, batch_size=config_of(hp).batch_size, **kwargs)


class ValObjective(keras.callbacks.Callback):
    """Puts the mean validation balanced accuracy into each epoch's logs, as ``val_balanced_accuracy``."""

    def __init__(self, embeddings: np.ndarray, labels: np.ndarray) -> None:
        super().__init__()
        self.embeddings, self.labels = embeddings, labels

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        assert logs is not None  # Keras always passes the epoch's logs
        metrics = scores(head_predictions(self.model, self.embeddings), self.labels)
        logs[OBJECTIVE] = mean_metric(metrics, "balanced_accuracy")


class LoggedRandomSearch(kt.RandomSearch):
    """RandomSearch that records each trial's epochs and prints a line per trial (model.fit runs silent).

    KerasTuner keeps only the best epoch's metrics, so the epochs trained go into the trial's directory.
    """

    def run_trial(self, trial: kt.engine.trial.Trial, *args: Any, **kwargs: Any) -> Any:
        histories = super().run_trial(trial, *args, **kwargs)
        epochs = sum(len(history.history[OBJECTIVE]) for history in histories)
        self._epochs_file(trial.trial_id).write_text(json.dumps(epochs))
        return histories

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        super().on_trial_end(trial)
        if trial.score is None:
            print(f"[kerastuner] trial {trial.trial_id}: {trial.status}", flush=True)
            return
        epochs = self.epochs_run(trial.trial_id)
        print(f"[kerastuner] trial {trial.trial_id}: {trial.score:.4f} after {epochs} epochs", flush=True)

    def epochs_run(self, trial_id: str) -> int:
        """Epochs the trial trained (early stopping may end it before the budget's epochs)."""
        return int(json.loads(self._epochs_file(trial_id).read_text()))

    def _epochs_file(self, trial_id: str) -> Path:
        return Path(self.get_trial_dir(trial_id)) / "epochs.json"


def run_kerastuner(
    *, data: dict[str, tuple[np.ndarray, np.ndarray]], workdir: Path, trials: int, epochs: int, seed: int
) -> SearchOutcome:
    """KerasTuner RandomSearch at the budget of ``trials`` x up to ``epochs``; resumes a finished project.

    ``data`` maps train and val to (embeddings, labels).
    """
    (train_x, train_y), (val_x, val_y) = data["train"], data["val"]
    tuner = LoggedRandomSearch(
        HeadHyperModel(train_x.shape[1], train_y),
        objective=kt.Objective(OBJECTIVE, direction="max"),
        max_trials=trials,
        seed=seed,
        hyperparameters=space_hyperparameters(bench_space()),
        directory=str(workdir / "kerastuner"),
        project_name=f"random-t{trials}-e{epochs}-s{seed}",
    )
    keras.utils.set_random_seed(seed)
    stopping = keras.callbacks.EarlyStopping(monitor=OBJECTIVE, mode="max", patience=PATIENCE)
    targets = {head: train_y[:, column].astype(np.int32) for column, head in enumerate(HEADS)}
    print(f"[kerastuner] RandomSearch: {trials} trials, up to {epochs} epochs each", flush=True)
    before = len(finished_trials(tuner))
    reused = before >= trials
    started = time.monotonic()
    tuner.search(train_x, targets, epochs=epochs, callbacks=[ValObjective(val_x, val_y), stopping], verbose=0)
    return replace(kt_outcome(tuner, None if reused else time.monotonic() - started), resumed_from=before)


def finished_trials(tuner: kt.Tuner) -> list[kt.engine.trial.Trial]:
    """The tuner's scored trials, in order."""
    finished = [trial for trial in tuner.oracle.trials.values() if trial.score is not None]
    return sorted(finished, key=lambda trial: int(trial.trial_id))


def kt_outcome(tuner: LoggedRandomSearch, seconds: float | None) -> SearchOutcome:
    """The tuner's best trial's checkpointed head (its best epoch's weights) and the search's history."""
    finished = finished_trials(tuner)
    best = tuner.oracle.get_best_trials(1)[0]
    with warnings.catch_warnings():
        # The checkpoint holds the trained optimizer's state, which a head for inference does not need.
        warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
        model = tuner.get_best_models(1)[0]
    return SearchOutcome(
        name="kerastuner",
        model=model,
        config=config_of(best.hyperparameters),
        val_value=float(best.score),
        values=tuple(float(trial.score) for trial in finished),
        epochs=sum(tuner.epochs_run(trial.trial_id) for trial in finished),
        seconds=seconds,
        note=f"best-epoch checkpoint of trial {best.trial_id}",
    )
