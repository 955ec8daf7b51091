"""Greedy ensemble selection with replacement (Caruana et al., ICML 2004), and the ensemble as one head.

:func:`select_ensemble` picks members from their validation outputs alone; :func:`ensemble_head` turns the
picked weights into one Keras model with a head's interface. Keras is imported inside the function that
needs it, so selection costs no TensorFlow import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from data.labels import HEADS

if TYPE_CHECKING:
    import keras

Outputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Selection:
    """The ensemble :func:`select_ensemble` chose, and the greedy run it came from."""

    indices: tuple[int, ...]  # the ensemble: members in the order added (the best prefix of `path`)
    counts: tuple[int, ...]  # per member, how often it is in `indices`
    weights: tuple[float, ...]  # per member, count / len(indices): what `ensemble_head` takes
    score: float  # the ensemble's score: the best of `scores`
    path: tuple[int, ...]  # the member added at each of the `size` steps
    scores: tuple[float, ...]  # the score after each step


def select_ensemble(members: Sequence[Outputs], score: Callable[[Outputs], float], size: int) -> Selection:
    """Add, ``size`` times and with replacement, the member whose addition scores best; keep the best prefix.

    ``members`` are the members' validation outputs (``{"age": (N, 9), ...}`` probabilities); ``score``
    maps the average of the chosen members' outputs to a value to maximise. Ties go to the lowest member
    index, and among equally scored prefixes to the shortest, so the selection is deterministic.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"`size >= 1` must hold for an integer size, but got {size=}.")
    arrays = _checked_members(members)
    total = {key: np.zeros_like(value) for key, value in arrays[0].items()}
    path: list[int] = []
    scores: list[float] = []
    for step in range(1, size + 1):
        index, value = _best_addition(arrays, total, step, score)
        total = {key: total[key] + arrays[index][key] for key in total}
        path.append(index)
        scores.append(value)
    length = 1 + int(np.argmax(scores))  # argmax takes the first of equal scores
    indices = tuple(path[:length])
    counts = tuple(indices.count(member) for member in range(len(arrays)))
    return Selection(
        indices=indices,
        counts=counts,
        weights=tuple(count / length for count in counts),
        score=scores[length - 1],
        path=tuple(path),
        scores=tuple(scores),
    )


def _checked_members(members: Sequence[Outputs]) -> list[dict[str, np.ndarray]]:
    if len(members) == 0:
        raise ValueError("select_ensemble needs at least one member, got 0.")
    arrays = [{key: np.asarray(value, dtype=np.float64) for key, value in m.items()} for m in members]
    expected = {key: value.shape for key, value in arrays[0].items()}
    for index, member in enumerate(arrays):
        shapes = {key: value.shape for key, value in member.items()}
        if shapes != expected:
            raise ValueError(
                f"every member must have the outputs and shapes of member 0, {expected}, "
                f"but member {index} has {shapes}."
            )
    return arrays


def _best_addition(
    arrays: Sequence[Mapping[str, np.ndarray]],
    total: Mapping[str, np.ndarray],
    step: int,
    score: Callable[[Outputs], float],
) -> tuple[int, float]:
    best_index, best_value = -1, -math.inf
    for index, member in enumerate(arrays):
        value = float(score({key: (total[key] + member[key]) / step for key in total}))
        if not math.isfinite(value):
            raise ValueError(
                f"score must return a finite number, but got {value} at step {step} for member {index}."
            )
        if value > best_value:
            best_index, best_value = index, value
    return best_index, best_value


def ensemble_head(
    heads: Sequence[keras.Model], weights: Sequence[float], *, name: str = "head"
) -> keras.Model:
    """One head: (None, D) "embedding" -> {"age", "race", "gender"}, the weighted average of ``heads``.

    ``weights`` (one per head, >= 0) are divided by their sum; heads of weight 0 are left out. Each kept
    head is copied as ``member_<i>``, ``i`` its index in ``heads``, so heads that share names (loaded heads
    are all "head", with the same layer names) or are the same object sit side by side. Built-in layers
    only: the model saves as ``.keras``, loads in safe mode and joins a base like any head.
    """
    import keras

    kept = _kept_members(heads, weights)
    dim = _checked_input_dim(kept)
    inputs = keras.Input(shape=(dim,), dtype="float32", name="embedding")
    terms = [(index, weight, _member_copy(head, f"member_{index}")(inputs)) for index, head, weight in kept]
    outputs = {
        output: keras.layers.Add(dtype="float32", name=output)(
            [
                keras.layers.Rescaling(weight, dtype="float32", name=f"{output}_weight_{index}")(out[output])
                for index, weight, out in terms
            ]
        )
        for output in HEADS
    }
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def _kept_members(
    heads: Sequence[keras.Model], weights: Sequence[float]
) -> list[tuple[int, keras.Model, float]]:
    if len(heads) != len(weights) or len(heads) == 0:
        raise ValueError(
            f"ensemble_head needs one weight per head and at least one head, "
            f"but got {len(heads)} heads and {len(weights)} weights."
        )
    values = [float(weight) for weight in weights]
    if not all(math.isfinite(value) and value >= 0 for value in values) or sum(values) <= 0:
        raise ValueError(
            f"ensemble weights must be finite and >= 0 with a sum > 0, but got {values}; "
            "pass Selection.weights."
        )
    total = sum(values)
    return [(index, heads[index], value / total) for index, value in enumerate(values) if value > 0]


def _checked_input_dim(kept: Sequence[tuple[int, keras.Model, float]]) -> int:
    shapes = [tuple(head.input_shape) for _, head, _ in kept]
    if len(set(shapes)) != 1 or len(shapes[0]) != 2 or shapes[0][1] is None:
        raise ValueError(f"every head must take the same (None, D) embedding, but got input shapes {shapes}.")
    for index, head, _ in kept:
        if not isinstance(head.output, dict) or set(head.output) != set(HEADS):
            got = sorted(head.output) if isinstance(head.output, dict) else type(head.output).__name__
            raise ValueError(f"every head must output {{{', '.join(HEADS)}}}; head {index} outputs {got}.")
    return int(shapes[0][1])


def _member_copy(head: keras.Model, name: str) -> keras.Model:
    import keras

    # A fresh copy rather than the head itself: a .keras file stores each layer's weights once, so layers
    # shared by two members (the same head passed twice) would load without weights in the second.
    copy = keras.models.clone_model(head)
    copy.set_weights(head.get_weights())
    return keras.Model(inputs=copy.input, outputs=copy.output, name=name)
