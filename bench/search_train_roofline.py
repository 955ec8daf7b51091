"""Part (r) of bench/search_train.py (issue 13): each head's epoch against its roofline, and its split.

For the paper head at batch 128-1024 and three heads a wide space can draw, one epoch (training + the
validation pass `train_head` runs after it) through `model.train` with the default options, against
`roofline.epoch_roofline` of the same head, rows and precision. The split times the same epoch cut
after each stage (`compile_head(..., until=...)`, same data, same seed): input draw = the "draw" epoch;
forward + backward = "gradients" − "draw"; optimizer update = the real epoch − "gradients"; validation
= one `validation_scores` call. Each is the fastest of ``rounds`` warm calls, by wall and by CPU time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import tensorflow as tf
from roofline import Peaks, epoch_roofline, parameters, step_cost, timed

from model.head import HeadConfig, LayerSpec
from model.paper import PAPER_HEAD
from model.train import STAGES, CompiledHead, TrainOptions, compile_head, validation_scores
from model.train_data import TrainData

SPLIT = ("draw", "forward+backward", "update", "validation")
DIM = 512  # embedding width of every timed head (VGG-Face)


def timed_heads() -> list[tuple[str, HeadConfig]]:
    """(label, config): the paper head at four batch sizes, then three wider or deeper heads."""
    paper = [(f"paper b{b}", dataclasses.replace(PAPER_HEAD, batch_size=b)) for b in (128, 256, 512, 1024)]
    wide = [
        ("3x2048 relu b512", HeadConfig(layers=(LayerSpec(2048, "relu", 0.3),) * 3, batch_size=512)),
        ("2x1024 gelu b512", HeadConfig(layers=(LayerSpec(1024, "gelu", 0.2),) * 2, batch_size=512)),
        ("6x1280 elu b128", HeadConfig(layers=(LayerSpec(1280, "elu", 0.5),) * 6, batch_size=128)),
    ]
    return paper + wide


@dataclass(frozen=True)
class HeadTiming:
    """One head's measured epoch: first-call seconds and (wall, CPU) seconds per split part."""

    label: str
    config: HeadConfig
    first_call: float
    parts: dict[str, tuple[float, float]]  # SPLIT names, plus "epoch" = training + validation

    def seconds(self, part: str, cpu: bool) -> float:
        return self.parts[part][1 if cpu else 0]


def time_head(
    label: str, config: HeadConfig, data: TrainData, options: TrainOptions, rounds: int
) -> HeadTiming:
    """The split of one head's epoch on ``data`` (see the module docstring)."""
    heads = {stage: compile_head(config, data, seed=0, options=options, until=stage) for stage in STAGES}
    first = {stage: _epoch(head, 0)[0] for stage, head in heads.items()}
    forward = heads["update"].forward
    validation_scores(forward, data)
    best: dict[str, tuple[float, float]] = {}
    for number in range(1, rounds + 1):
        runs = {stage: _epoch(head, number) for stage, head in heads.items()}
        runs["validation"] = timed(lambda: validation_scores(forward, data))
        best = {key: _least(best.get(key), value) for key, value in runs.items()}
    parts = {
        "draw": best["draw"],
        "forward+backward": _minus(best["gradients"], best["draw"]),
        "update": _minus(best["update"], best["gradients"]),
        "validation": best["validation"],
        "epoch": _plus(best["update"], best["validation"]),
    }
    return HeadTiming(label, config, first["update"], parts)


def _epoch(head: CompiledHead, number: int) -> tuple[float, float]:
    seed = tf.constant([0, number], tf.int64)
    return timed(lambda: head.run_epoch(seed).numpy())


def _least(old: tuple[float, float] | None, new: tuple[float, float]) -> tuple[float, float]:
    return new if old is None else (min(old[0], new[0]), min(old[1], new[1]))


def _minus(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return a[0] - b[0], a[1] - b[1]


def _plus(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return a[0] + b[0], a[1] + b[1]


def report(timings: list[HeadTiming], peaks: Peaks, rows: int, val_rows: int, precision: str) -> list[str]:
    """Lines of the roofline table and the split table, by wall and by CPU-second rates."""
    lines = [
        f"(r) epoch of {rows} train + {val_rows} val rows ({precision}) vs its roofline; "
        "ratio = roofline ÷ measured (1 = at the roofline); bound = a step's bytes time ÷ its FLOP time",
        f"  {'head':24s} {'params':>6s} {'bound':>5s} {'epoch s':>8s} {'roof s':>7s} {'ratio':>6s} "
        f"{'epoch CPU-s':>11s} {'roof CPU-s':>10s} {'ratio':>6s} {'first call s':>12s}",
    ]
    for t in timings:
        cost = step_cost(t.config, DIM, min(t.config.batch_size, rows), precision)
        bound = (cost.bytes / peaks.byte_rate(True)) / (cost.flops / peaks.flop_rate(precision, True))
        wall_roof, cpu_roof = (
            epoch_roofline(t.config, DIM, rows, val_rows, precision, peaks, cpu=cpu)["epoch"]
            for cpu in (False, True)
        )
        wall, cpu = t.seconds("epoch", False), t.seconds("epoch", True)
        lines.append(
            f"  {t.label:24s} {parameters(t.config, DIM) / 1e6:5.2f}M {bound:5.2f} {wall:8.2f} "
            f"{wall_roof:7.2f} {wall_roof / wall:6.3f} {cpu:11.2f} {cpu_roof:10.2f} "
            f"{cpu_roof / cpu:6.3f} {t.first_call:12.2f}"
        )
    lines.append(
        "  split, % of the epoch's CPU-s (% of its wall); last column: validation's share of the roofline"
    )
    lines.append(f"  {'head':24s} " + " ".join(f"{name:>18s}" for name in SPLIT) + f" {'val roof':>8s}")
    for t in timings:
        shares = " ".join(f"{_share(t, p, True):10.1f} ({_share(t, p, False):5.1f})" for p in SPLIT)
        roof = epoch_roofline(t.config, DIM, rows, val_rows, precision, peaks, cpu=True)
        lines.append(f"  {t.label:24s} {shares} {100 * roof['validation'] / roof['epoch']:7.1f}%")
    return lines


def _share(timing: HeadTiming, part: str, cpu: bool) -> float:
    return 100 * timing.seconds(part, cpu) / timing.seconds("epoch", cpu)
