"""Fixed-seed synthetic embeddings for the training benches: FairFace's class frequencies, learnable labels.

Each row is standard normal noise plus, per head, its class's centroid (scaled so that a head learns
well above chance but far from perfectly), so seed-to-seed spread of a trained head's metrics means
something; speed does not depend on the values.
"""

from __future__ import annotations

import numpy as np

from model.train_data import TrainData

# Class counts of the full FairFace train CSV (../shared/fairface/README.md), vocabulary order.
TRAIN_COUNTS = {
    "age": (1792, 10408, 9103, 25598, 19250, 10744, 6228, 2779, 842),
    "race": (16527, 12233, 13367, 12287, 10795, 12319, 9216),
    "gender": (40758, 45986),
}
FAIRFACE_VAL_ROWS = 10_954  # fairface_label_val.csv
SIGNAL = 0.05  # centroid scale: distances of 0.05·√(2·512) ≈ 1.6 noise deviations between classes


def synthetic_data(samples: int, dim: int, val_samples: int = 512, seed: int = 0) -> TrainData:
    """``samples`` train and ``val_samples`` val rows (one view) drawn the same way, as device tensors."""
    x, labels, val_x, val_labels = synthetic_arrays(samples, dim, val_samples, seed)
    return TrainData.from_arrays(x[None], labels, val_x, val_labels)


def synthetic_arrays(
    samples: int, dim: int, val_samples: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train x, train labels, val x, val labels): float32 rows and (rows, 3) int8 labels."""
    rng = np.random.default_rng(seed)
    centroids = [SIGNAL * rng.standard_normal((len(counts), dim)) for counts in TRAIN_COUNTS.values()]

    def draw(rows: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.stack(
            [rng.choice(len(c), size=rows, p=np.array(c) / sum(c)) for c in TRAIN_COUNTS.values()], axis=1
        )
        x = rng.standard_normal((rows, dim), dtype=np.float32)
        for column, centre in enumerate(centroids):
            x += centre[labels[:, column]].astype(np.float32)
        return x, labels.astype(np.int8)

    return *draw(samples), *draw(val_samples)
