"""The worker launcher: one child process per GPU slot, each pinned with ``CUDA_VISIBLE_DEVICES``.

Compose gives every replica of a ``count: 1`` service the same GPU, so one container takes all GPUs
and this launcher splits them. SIGTERM/SIGINT to the launcher is forwarded to every child as SIGTERM;
each ends its trial and exits 0, and so does the launcher.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from multiprocessing import resource_tracker
from types import FrameType
from typing import TYPE_CHECKING, Any

from data.errors import ConfigError
from search.stopflag import StopFlag
from search.tfquiet import import_tensorflow_quietly

if TYPE_CHECKING:
    from search.worker import WorkerSpec

_logger = logging.getLogger("hpo.worker")


def visible_gpus() -> list[str]:
    """The GPU indices ``nvidia-smi -L`` lists (empty when there is no NVIDIA driver or GPU)."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listing.returncode != 0:
        return []
    return re.findall(r"^GPU (\d+):", listing.stdout, flags=re.MULTILINE)


def worker_slots(gpus: str, *, per_gpu: int, n_workers: int | None, available: list[str]) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` value of each worker process ("" = CPU).

    ``gpus``: ``all`` (every GPU; CPU when there is none), a list such as ``0,1``, or ``none`` (CPU).
    ``per_gpu`` processes share each GPU; ``n_workers`` is the number of CPU processes.
    """
    if per_gpu < 1:
        raise ConfigError(f"--per-gpu must be at least 1, got {per_gpu}")
    if n_workers is not None:
        if n_workers < 1:
            raise ConfigError(f"--n-workers must be at least 1, got {n_workers}")
        if gpus not in ("none", "all"):
            raise ConfigError(f"--n-workers runs CPU workers; it cannot be combined with --gpus {gpus}")
        return [""] * n_workers
    if gpus == "none" or (gpus == "all" and not available):
        return [""] * per_gpu
    chosen = available if gpus == "all" else _parse_gpu_list(gpus)
    missing = [gpu for gpu in chosen if gpu not in available]
    if missing:
        have = f"GPUs {', '.join(available)}" if available else "no GPU"
        raise ConfigError(
            f"--gpus {gpus} names GPU {', '.join(missing)}, but this machine has {have} (nvidia-smi -L); "
            "pass GPUs it lists, all, or none."
        )
    return [gpu for gpu in chosen for _ in range(per_gpu)]


def plan_slots(gpus: str, *, per_gpu: int, n_workers: int | None) -> list[str]:
    """The worker slots on this machine for ``--gpus``/``--per-gpu``/``--n-workers`` (see `worker_slots`)."""
    available = [] if gpus == "none" or n_workers is not None else visible_gpus()
    return worker_slots(gpus, per_gpu=per_gpu, n_workers=n_workers, available=available)


def describe_slots(slots: list[str]) -> str:
    """E.g. ``"4 worker process(es): 2 on GPU 0, 2 on GPU 1"``."""
    per_device = Counter(f"GPU {slot}" if slot else "CPU" for slot in slots)
    where = ", ".join(f"{n} on {device}" for device, n in per_device.items())
    return f"{len(slots)} worker process(es): {where}"


def _parse_gpu_list(gpus: str) -> list[str]:
    items = [item.strip() for item in gpus.split(",")]
    if not all(item.isdigit() for item in items):
        raise ConfigError(f"--gpus must be all, none or a list of GPU indices such as 0,1; got {gpus!r}")
    return list(dict.fromkeys(str(int(item)) for item in items))


def _child(fields: dict[str, Any]) -> None:
    # First: a SIGTERM that came while this child started, or comes while it imports TensorFlow, is a
    # stop, not a kill. SIGINT is ignored: Ctrl-C reaches the whole process group, and the launcher
    # forwards it as one SIGTERM.
    stop = StopFlag()
    stop.install(interrupt=False)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})  # blocked by `launch`
    # Pinned before TensorFlow is imported, so CUDA only ever sees this child's GPU.
    if fields["gpu"] is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = fields["gpu"]
    # A spawned child starts bare: TensorFlow must load quietly before search.worker imports it. That
    # is also why the spec arrives as plain fields and search.worker is imported only here.
    import_tensorflow_quietly()
    from search.worker import WorkerSpec, worker_main

    code = worker_main(WorkerSpec(**fields), stop)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Interpreter teardown with TensorFlow loaded takes seconds (2-4 s measured on 2 cores) and has
    # nothing left to do: results are in the database, heads in the artifact store.
    os._exit(code)


def launch(spec: WorkerSpec, slots: list[str], *, first_index: int = 0, stop: StopFlag | None = None) -> int:
    """Run one worker per slot (in this process when there is one) and return the exit code.

    ``stop``: the flag this process installed (`hpo worker` does, first thing): a stop already asked for
    starts no worker, and the in-process worker honours one asked for before it began.
    """
    from search.worker import worker_main

    if stop is not None and stop.is_set():
        return 0
    if len(slots) == 1:
        return worker_main(dataclasses.replace(spec, index=first_index, gpu=slots[0]), stop)
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=_child,
            args=(dataclasses.asdict(dataclasses.replace(spec, index=first_index + i, gpu=slot)),),
            name=f"hpo-worker-{first_index + i}",
        )
        for i, slot in enumerate(slots)
    ]

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # Each child starts with both signals blocked (the mask survives exec) and unblocks them once its
    # stop flag is installed: a stop while a child starts waits for it, rather than killing it. The
    # resource tracker's start unblocks them, so it starts first.
    resource_tracker.ensure_running()
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        for child in children:
            child.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)  # a stop that came meanwhile is forwarded now
    for child in children:
        child.join()
    codes = {child.name: child.exitcode for child in children}
    failed = {name: code for name, code in codes.items() if code != 0}
    for name, code in failed.items():
        how = (
            f"was killed by {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exited {code}"
        )
        print(f"hpo: {name} {how}", file=sys.stderr, flush=True)
    return 0 if not failed else 2 if all(code == 2 for code in failed.values()) else 1
