"""The roofline of a trial's epoch (issue 13): measured peaks and a per-step model of FLOPs and bytes.

A step cannot run faster than max(FLOPs ÷ the matmul peak at its precision, bytes ÷ the streaming
bandwidth); an epoch's roofline is the sum of that over its steps plus the validation pass's. Both peaks
are measured here, in the same process as the epochs they judge, as wall rates and as rates per
CPU-second (what a run got of a machine other jobs may share).

Bytes counted per step (the traffic the issue names, whatever kernels TensorFlow picks for it):
- optimizer: per parameter, param, grad and each state slot read and param and the slots written, at
  float32 (Adam, AdamW, Nadam: m and v, so 7 × 4 B; RMSprop: 5 × 4 B; SGD: 3 × 4 B);
- mixed precision: each float32 weight read and its bfloat16 copy written (6 B per parameter);
- matmul operands: the weights read by the forward and the input-gradient matmuls and the weight
  gradient written, at the compute dtype (3 × c B per parameter);
- activations, per hidden unit and sample at the compute dtype c: the layer's output written and read
  by the next layer, its gradient written and read, the output read again by the weight gradient
  (5 c), and with dropout the mask written, then read by the forward and by the backward pass (3 c);
- the gathered input batch: B × D float32 rows read and written.
Validation (forward only, one pass over the val split): the rows read, each weight cast once (mixed) and
read once, each hidden activation written and read once. FLOPs are the matmuls': 2 B (3 S − D u₀) per
step (forward, weight gradients, input gradients except into the embeddings), 2 M S for validation.
"""

from __future__ import annotations

import functools
import itertools
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from data.labels import HEADS, VOCABULARIES
from model.head import HeadConfig

# float32 words read + written per parameter by one update (param, grad, slots in; param, slots out).
OPTIMIZER_WORDS = {"adam": 7, "adamw": 7, "nadam": 7, "rmsprop": 5, "sgd": 3}
COMPUTE_BYTES = {"mixed": 2, "float32": 4}
OUTPUT_UNITS = sum(len(VOCABULARIES[head]) if head != "gender" else 1 for head in HEADS)  # 9 + 7 + 1


@dataclass(frozen=True)
class Rate:
    """A throughput (FLOP or bytes) per wall second and per CPU-second of this process."""

    wall: float
    cpu: float


@dataclass(frozen=True)
class Peaks:
    """What the roofline divides by: matmul FLOP rates per precision and the streaming bandwidth."""

    matmul: dict[str, Rate]  # "float32" and "bfloat16"
    bandwidth: Rate  # bytes

    def flop_rate(self, precision: str, cpu: bool) -> float:
        """The matmul peak of a training precision ("mixed" computes in bfloat16)."""
        rate = self.matmul["bfloat16" if precision == "mixed" else "float32"]
        return rate.cpu if cpu else rate.wall

    def byte_rate(self, cpu: bool) -> float:
        return self.bandwidth.cpu if cpu else self.bandwidth.wall


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(call: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``call``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    call()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def best_rate(work: float, call: Callable[[], object], repeats: int = 5) -> Rate:
    """``work`` ÷ the fastest of ``repeats`` warm calls, by wall and by CPU time separately."""
    call()
    walls, cpus = zip(*(timed(call) for _ in range(repeats)), strict=True)
    return Rate(work / min(walls), work / max(min(cpus), 1e-9))


def matmul_peak(dtype: tf.DType, sizes: tuple[int, ...] = (512, 1024, 2048, 4096)) -> Rate:
    """The best rate of warm square matmuls over ``sizes``; each call repeats one ≈ 4096³'s work."""
    best = Rate(0.0, 0.0)
    for size in sizes:
        a = tf.cast(tf.random.stateless_normal([size, size], [1, 2]), dtype)
        repeats = max(1, (4096 // size) ** 3 // 4)

        @tf.function
        def products(x: tf.Tensor, repeats: int = repeats) -> tf.Tensor:
            total = tf.zeros([], tf.float32)
            for _ in tf.range(repeats):
                total += tf.cast(tf.matmul(x, x)[0, 0], tf.float32)
            return total

        rate = best_rate(2.0 * size**3 * repeats, functools.partial(_run, products, a))
        best = Rate(max(best.wall, rate.wall), max(best.cpu, rate.cpu))
    return best


def _run(function: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor) -> None:
    function(x).numpy()


def stream_bandwidth(elements: int = 2**26) -> Rate:
    """Bytes read + written per second by the faster of x + y (TF) and 2x + y (XLA, one fused loop).

    Over float32 arrays of ``elements`` (256 MiB each by default, far beyond any cache): 12 B per element.
    """
    x = tf.random.stateless_normal([elements], [1, 2])
    y = tf.random.stateless_normal([elements], [3, 4])
    kernels = (tf.function(tf.add), tf.function(lambda a, b: 2.0 * a + b, jit_compile=True))
    rates = [best_rate(12.0 * elements, functools.partial(kernel, x, y)) for kernel in kernels]
    return Rate(max(r.wall for r in rates), max(r.cpu for r in rates))


def measure_peaks(quick: bool = False) -> Peaks:
    """Matmul peaks (float32, bfloat16) and the streaming bandwidth, measured now."""
    sizes = (512, 1024) if quick else (512, 1024, 2048, 4096)
    matmul = {name: matmul_peak(getattr(tf, name), sizes) for name in ("float32", "bfloat16")}
    return Peaks(matmul=matmul, bandwidth=stream_bandwidth(2**24 if quick else 2**26))


@dataclass(frozen=True)
class Cost:
    """Matmul FLOPs and bytes moved by one step (or one validation pass)."""

    flops: float
    bytes: float

    def seconds(self, flop_rate: float, byte_rate: float) -> float:
        return max(self.flops / flop_rate, self.bytes / byte_rate)


def _widths(config: HeadConfig, dim: int) -> tuple[list[int], int]:
    """(hidden widths, S = Σ in × out over every Dense layer, the three outputs included)."""
    hidden = [layer.units for layer in config.layers]
    pairs = itertools.pairwise([dim, *hidden])
    return hidden, sum(a * b for a, b in pairs) + hidden[-1] * OUTPUT_UNITS


def parameters(config: HeadConfig, dim: int) -> int:
    """Trainable parameters of the head: kernels and biases."""
    hidden, kernels = _widths(config, dim)
    return kernels + sum(hidden) + OUTPUT_UNITS


def step_cost(config: HeadConfig, dim: int, batch: int, precision: str) -> Cost:
    """FLOPs and bytes of one training step of ``batch`` rows (see the module docstring)."""
    hidden, kernels = _widths(config, dim)
    c = COMPUTE_BYTES[precision]
    params = parameters(config, dim)
    per_param = 4 * OPTIMIZER_WORDS[config.optimizer] + 3 * c + (6 if precision == "mixed" else 0)
    per_sample = sum((5 + (3 if layer.dropout > 0 else 0)) * c * layer.units for layer in config.layers)
    moved = params * per_param + batch * (per_sample + 8 * dim)
    return Cost(flops=2.0 * batch * (3 * kernels - dim * hidden[0]), bytes=float(moved))


def validation_cost(config: HeadConfig, dim: int, rows: int, precision: str) -> Cost:
    """FLOPs and bytes of one forward pass over ``rows`` validation rows."""
    hidden, kernels = _widths(config, dim)
    c = COMPUTE_BYTES[precision]
    weights = parameters(config, dim) * (c + (6 if precision == "mixed" else 0))
    return Cost(flops=2.0 * rows * kernels, bytes=float(weights + rows * (4 * dim + 2 * c * sum(hidden))))


def epoch_roofline(
    config: HeadConfig, dim: int, rows: int, val_rows: int, precision: str, peaks: Peaks, *, cpu: bool
) -> dict[str, float]:
    """Roofline seconds of an epoch's training steps, its validation pass and their sum."""
    flop_rate, byte_rate = peaks.flop_rate(precision, cpu), peaks.byte_rate(cpu)
    batch = min(config.batch_size, rows)
    full, rest = divmod(rows, batch)
    train = full * step_cost(config, dim, batch, precision).seconds(flop_rate, byte_rate)
    if rest:
        train += step_cost(config, dim, rest, precision).seconds(flop_rate, byte_rate)
    validation = validation_cost(config, dim, val_rows, precision).seconds(flop_rate, byte_rate)
    return {"train": train, "validation": validation, "epoch": train + validation}
