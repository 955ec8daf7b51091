"""What face-hpo's departures from the authors' code do to the paper's Table II head (docs/paper.md).

On a dlib-resnet cache of the shared FairFace sample (the one bench/quality.py builds: train 6,400 images
with 2 augmented views, val 2,000, test 1,600), the Table II head is trained for ``--epochs`` epochs per
variant and seed, scoring val and test after every epoch:

- ``face-hpo``: class weights aligned to the labels, every cached view, mixed bfloat16 compute;
- ``authors-weights``: the class weights permuted as the authors' code applied them: each class gets the
  balanced weight of another class, the permutation their code made on the full train label file
  (``--labels``, whose table of both weightings this prints first);
- ``float32``: float32 compute instead of mixed bfloat16;
- ``code-activations``: relu on layers 4 and 5, as the authors' code ran, instead of Table II's LeakyReLU;
- ``no-views``: only the clean view (``hpo embed --augment-views 0``).

Each run's epoch is then chosen two ways with patience 5, from the same curve (the stopping rule does not
change the epochs before it stops): face-hpo's (best mean validation balanced accuracy) and the authors'
(lowest total validation loss, the three heads' losses with the run's class weights). With ``--dataset``
it also decodes ``--decode-images`` test images with PIL instead of TensorFlow and counts the changed
pixels and the flipped predictions of the face-hpo head (seed 0) through the dlib base.

    .venv/bin/python bench/paper_fidelity.py --labels ../shared/fairface \\
        --cache work/bench-quality/cache-k2 --dataset work/bench-quality/root --seeds 0,1 --epochs 30
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from search.tfquiet import import_tensorflow_quietly

import_tensorflow_quietly()

import tensorflow as tf  # noqa: E402

from data.cache import Cache, open_cache  # noqa: E402
from data.fairface import PAPER_SPLIT_SEED, TRAIN_CSV, paper_train_order, read_labels  # noqa: E402
from data.labels import HEADS, VOCABULARIES  # noqa: E402
from model.fitting import head_losses  # noqa: E402
from model.head import HeadConfig, LayerSpec  # noqa: E402
from model.metrics import head_metrics, mean_metric, predicted_classes  # noqa: E402
from model.paper import PAPER_HEAD  # noqa: E402
from model.train import TrainData, TrainOptions, compile_head, loss_class_weights  # noqa: E402

PATIENCE = 5
# str.get_dummies() orders its one-hot columns by sorting the labels (the authors' data_encoder.py).
ONE_HOT_ORDER = {head: sorted(VOCABULARIES[head]) for head in ("age", "race")}
CODE_HEAD = replace(
    PAPER_HEAD,
    layers=tuple(
        LayerSpec(layer.units, "relu" if index in (3, 4) else layer.activation, layer.dropout)
        for index, layer in enumerate(PAPER_HEAD.layers)
    ),
)


@dataclass(frozen=True)
class Variant:
    config: HeadConfig = PAPER_HEAD
    authors_weights: bool = False
    precision: str = "mixed"
    all_views: bool = True


VARIANTS = {
    "face-hpo": Variant(),
    "authors-weights": Variant(authors_weights=True),
    "float32": Variant(precision="float32"),
    "code-activations": Variant(config=CODE_HEAD),
    "no-views": Variant(all_views=False),
}


@dataclass
class Run:
    """One variant and seed: per epoch the validation loss and mean balanced accuracy, and test metrics."""

    val_loss: list[float]
    val_balanced: list[float]
    test: list[dict[str, dict[str, float]]]
    seconds_per_epoch: float


def authors_weight_of(root: Path) -> dict[str, dict[str, str]]:
    """Per head, class -> the class whose balanced weight the authors' loss gave it.

    Their compute_class_weight(classes=pd.unique(col)) lists classes in order of first appearance in their
    shuffled train frame; the loss multiplies weight j with one-hot column j, in sorted order.
    """
    table = read_labels(root / TRAIN_CSV)
    train = table.labels[paper_train_order(len(table), PAPER_SPLIT_SEED)]
    mapping = {}
    for column, head in enumerate(("age", "race")):
        classes, first = np.unique(train[:, column], return_index=True)
        appearance = [VOCABULARIES[head][c] for c in classes[np.argsort(first)]]
        mapping[head] = dict(zip(ONE_HOT_ORDER[head], appearance, strict=True))
    return mapping


def weights_table(root: Path) -> str:
    """The balanced and the authors' weights on the full train label file's paper split, as Markdown."""
    table = read_labels(root / TRAIN_CSV)
    train = table.labels[paper_train_order(len(table), PAPER_SPLIT_SEED)]
    aligned = loss_class_weights(train, PAPER_HEAD)
    permuted = authors_weights(aligned, authors_weight_of(root))
    lines = [f"{len(train):,} training rows"]
    for head, weights in aligned.items():
        vocabulary = VOCABULARIES[head]
        lines += ["", f"| {head} | " + " | ".join(vocabulary) + " |", "|---" * (len(vocabulary) + 1) + "|"]
        lines.append("| balanced | " + " | ".join(f"{w:.4f}" for w in weights) + " |")
        lines.append("| authors' code | " + " | ".join(f"{w:.4f}" for w in permuted[head]) + " |")
        weight_of = authors_weight_of(root)[head]
        lines.append("| (weight of) | " + " | ".join(weight_of[name] for name in vocabulary) + " |")
    return "\n".join(lines)


def authors_weights(
    aligned: Mapping[str, np.ndarray], weight_of: Mapping[str, Mapping[str, str]]
) -> dict[str, np.ndarray]:
    """The aligned weights permuted as the authors' code applied them (``weight_of``: authors_weight_of)."""
    permuted = {}
    for head, weights in aligned.items():
        vocabulary = VOCABULARIES[head]
        permuted[head] = np.array([weights[vocabulary.index(weight_of[head][name])] for name in vocabulary])
    return permuted


def scores(outputs: Mapping[str, tf.Tensor], labels: np.ndarray) -> dict[str, dict[str, float]]:
    predicted = predicted_classes({head: np.asarray(value) for head, value in outputs.items()})
    return {
        head: head_metrics(labels[:, column], predicted[:, column], len(VOCABULARIES[head]))
        for column, head in enumerate(HEADS)
    }


def train_run(
    variant: Variant, cache: Cache, seed: int, epochs: int, weight_of: Mapping[str, Mapping[str, str]]
) -> tuple[Run, object]:
    """Train one variant; return its per-epoch record and the head at its best balanced-accuracy epoch."""
    views = [cache.embeddings("train", v) for v in range(cache.views("train") if variant.all_views else 1)]
    data = TrainData.from_arrays(views, cache.labels("train"), cache.embeddings("val"), cache.labels("val"))
    weights = loss_class_weights(data.train_labels, variant.config)
    if variant.authors_weights:
        weights = authors_weights(weights, weight_of)
    losses = head_losses(weights)
    head = compile_head(
        variant.config, data, seed=seed, options=TrainOptions(precision=variant.precision), weights=weights
    )
    val_labels, test_embeddings = cache.labels("val"), tf.constant(cache.embeddings("test"))
    run, best, started = Run([], [], [], 0.0), (-1.0, None), time.monotonic()
    for epoch in range(epochs):
        head.run_epoch(tf.constant([seed, epoch], tf.int64))
        outputs = head.forward(data.val_embeddings)
        loss = sum(float(losses[name](val_labels[:, c], outputs[name])) for c, name in enumerate(HEADS))
        run.val_loss.append(loss)
        run.val_balanced.append(mean_metric(scores(outputs, val_labels), "balanced_accuracy"))
        run.test.append(scores(head.forward(test_embeddings), cache.labels("test")))
        if run.val_balanced[-1] > best[0]:
            best = (run.val_balanced[-1], head.model.get_weights())
    run.seconds_per_epoch = (time.monotonic() - started) / epochs
    head.model.set_weights(best[1])
    return run, head.model


def chosen_epoch(values: Sequence[float], better: Callable[[float, float], bool]) -> int:
    """The epoch early stopping with PATIENCE keeps: the best so far when it stops (or at the end)."""
    best = 0
    for epoch in range(1, len(values)):
        if better(values[epoch], values[best]):
            best = epoch
        elif epoch - best >= PATIENCE:
            break
    return best


def summary(run: Run) -> dict[str, object]:
    """The test figures at the epoch each stopping rule keeps."""
    picks = {
        "balanced_accuracy": chosen_epoch(run.val_balanced, lambda a, b: a > b),
        "val_loss": chosen_epoch(run.val_loss, lambda a, b: a < b),
    }
    return {
        "seconds_per_epoch": run.seconds_per_epoch,
        **{
            rule: {
                "epoch": epoch,
                "test": run.test[epoch],
                "mean_balanced": mean_metric(run.test[epoch], "balanced_accuracy"),
            }
            for rule, epoch in picks.items()
        },
    }


def decoder_effect(cache: Cache, root: Path, head: object, count: int) -> dict[str, object]:
    """PIL-decoded pixels against the pipeline's (the reference), and the head's predictions on both."""
    from PIL import Image

    from data.images import image_batches
    from model.bases import resolve_base
    from model.predict import head_outputs

    files = list(cache.files("test")[:count])
    reference = np.concatenate([batch.numpy() for _, batch in image_batches(root, files, batch_size=16)])
    pil = np.stack([np.asarray(Image.open(root / name).convert("RGB")) for name in files])
    difference = np.abs(reference.astype(np.int16) - pil.astype(np.int16))
    base = resolve_base("dlib-resnet", cache.manifest.get("weights_path"), dtype="float32")
    encode = base.make_encoder(workers=1)
    try:
        embedded = {"reference": encode(reference), "pil": encode(pil)}
    finally:
        encode.close()
    classes = {name: predicted_classes(head_outputs(head, vectors)) for name, vectors in embedded.items()}
    return {
        "images": len(files),
        "max_grey_levels": int(difference.max()),
        "pixels_changed": float(np.mean(difference.max(axis=-1) > 0)),
        "reference_equals_cache": float(
            np.abs(embedded["reference"] - cache.embeddings("test")[:count]).max()
        ),
        "flips": {
            head: int(np.sum(classes["reference"][:, c] != classes["pil"][:, c]))
            for c, head in enumerate(HEADS)
        },
    }


def markdown(results: Mapping[str, Mapping[int, Mapping[str, object]]]) -> str:
    """Per variant, seed and stopping rule: chosen epoch and test accuracy / balanced accuracy per head."""
    lines = [
        "| variant | seed | stop on | epoch | "
        + " | ".join(f"{h} acc / bal" for h in HEADS)
        + " | mean bal | s/epoch |",
        "|---|---:|---|---:|" + "---:|" * (len(HEADS) + 2),
    ]
    for variant, seeds in results.items():
        for seed, figures in seeds.items():
            for rule in ("balanced_accuracy", "val_loss"):
                pick: Mapping[str, object] = figures[rule]  # type: ignore[assignment]
                test: Mapping[str, Mapping[str, float]] = pick["test"]  # type: ignore[assignment]
                cells = " | ".join(
                    f"{test[h]['accuracy']:.1%} / {test[h]['balanced_accuracy']:.1%}" for h in HEADS
                )
                lines.append(
                    f"| {variant} | {seed} | {rule} | {pick['epoch']} | {cells} "
                    f"| {pick['mean_balanced']:.1%} | {figures['seconds_per_epoch']:.2f} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labels", type=Path, required=True, help="FairFace root with the full train CSV")
    parser.add_argument("--cache", type=Path, required=True, help="dlib-resnet cache with train, val, test")
    parser.add_argument("--dataset", type=Path, help="FairFace root of the cache's images (decoder part)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--decode-images", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("paper_fidelity.json"))
    args = parser.parse_args()
    print(weights_table(args.labels), flush=True)
    weight_of = authors_weight_of(args.labels)
    cache = open_cache(args.cache)
    results: dict[str, dict[int, dict[str, object]]] = {}
    heads = {}
    for name in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            run, model = train_run(VARIANTS[name], cache, seed, args.epochs, weight_of)
            results.setdefault(name, {})[seed] = summary(run)
            heads[(name, seed)] = model
            print(f"{name} seed {seed}: {json.dumps(results[name][seed]['balanced_accuracy'])}", flush=True)
    report: dict[str, object] = {"cache": str(args.cache), "epochs": args.epochs, "results": results}
    if args.dataset is not None:
        report["decoder"] = decoder_effect(cache, args.dataset, heads[("face-hpo", 0)], args.decode_images)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(results))
    print(json.dumps(report.get("decoder"), indent=2))


if __name__ == "__main__":
    main()
