"""The paper's figures: its Table II head and the test results of its Tables III-V.

Debreczeni, Juhász, Szécsényi, "Identifying Facial Features using Deep Neural Networks". The test
supports are the class counts of the ``paper`` split's test part (17,349 rows), which they equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from model.head import HeadConfig, LayerSpec

# Table II: the head the authors' hyperparameter search found; Adam, learning rate 1e-3, batch 256. Table II's
# activations: the authors' code (src/fair_face_model.py) ran relu on layers 4 and 5 (docs/paper.md).
PAPER_HEAD = HeadConfig(
    layers=(
        LayerSpec(640, "leaky_relu", 0.2),
        LayerSpec(896, "relu", 0.3),
        LayerSpec(2176, "tanh", 0.4),
        LayerSpec(640, "leaky_relu", 0.6),
        LayerSpec(1664, "leaky_relu", 0.2),
    ),
    learning_rate=1e-3,
    batch_size=256,
    class_weight_strength=1.0,
    optimizer="adam",
)


# The paper split's train part, on which the authors trained: 80 % of the 86,744-row train CSV.
TRAIN_IMAGES = 69_395
BASE = "VGG-Face"  # the frozen base under the paper's head: VGG16 trained on faces


@dataclass(frozen=True)
class PaperHead:
    """What the paper's Table III, IV or V gives for one head, as far as this project holds it."""

    table: str
    accuracy: float  # the table's overall accuracy (support-weighted recall)
    support: Mapping[str, int]  # the table's Support column = the `paper` split's test counts
    # Only the per-class figures this project holds (class -> value); the others are not held.
    precision: Mapping[str, float] = field(default_factory=dict)
    recall: Mapping[str, float] = field(default_factory=dict)
    f1: Mapping[str, float] = field(default_factory=dict)


# Only numbers this project actually has: the paper's per-class precision/recall/F1 are not in the repository,
# so those cells stay empty instead of being reconstructed.
PAPER: Mapping[str, PaperHead] = {
    "age": PaperHead(
        table="Table III",
        accuracy=0.453,
        support={
            "0-2": 371,
            "3-9": 2084,
            "10-19": 1836,
            "20-29": 5220,
            "30-39": 3827,
            "40-49": 2077,
            "50-59": 1232,
            "60-69": 553,
            "more than 70": 149,
        },
        recall={"30-39": 0.03},
    ),
    "race": PaperHead(
        table="Table IV",
        accuracy=0.550,
        support={
            "White": 3310,
            "Black": 2373,
            "Latino_Hispanic": 2709,
            "East Asian": 2499,
            "Southeast Asian": 2186,
            "Indian": 2456,
            "Middle Eastern": 1816,
        },
    ),
    "gender": PaperHead(table="Table V", accuracy=0.856, support={"Female": 8163, "Male": 9186}),
}
