"""Submitting a sweep's shards through submitit: parallel local processes or one Slurm array.

Each shard is a :class:`ShardTask`: :func:`lielib.book.sweep.run_sweep` for shard ``i`` of
``n``, in its own process (one papermill kernel for all its models). The Slurm executor
submits one array job with one task per shard; on preemption or a time-out Slurm's
signal makes submitit requeue the task, which resumes: finished models have their tables
and are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from .core import run_sweep

__all__ = ["EXECUTORS", "ShardTask", "SlurmOptions", "make_executor", "submit_shards", "wait"]

EXECUTORS = ("local", "slurm")


@dataclass(frozen=True)
class SlurmOptions:
    """What one array task asks Slurm for (``sbatch`` options), and its requeue policy.

    Attributes:
        partition: ``--partition`` (None: the cluster's default).
        gpus_per_task: ``--gpus-per-task`` (0: none).
        cpus_per_task: ``--cpus-per-task``.
        mem_gb: ``--mem`` in GB.
        time_min: ``--time`` in minutes; also the local executor's time-out.
        array_parallelism: at most this many shards run at once (``--array=0-(n-1)%p``).
        account: ``--account``; qos: ``--qos``; constraint: ``--constraint``.
        setup: shell lines run before each task (``module load``, ``export HF_HOME=...``).
        max_timeouts: how often a task that hits its time limit is requeued (preempted
            tasks are always requeued).
        job_name: ``--job-name``.
    """

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 4
    mem_gb: float = 16
    time_min: int = 120
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()
    max_timeouts: int = 3
    job_name: str = "lielib-sweep"

    def sbatch(self) -> dict[str, Any]:
        """The parameters of :class:`submitit.SlurmExecutor` (``#SBATCH`` lines)."""
        params: dict[str, Any] = {
            "job_name": self.job_name, "time": self.time_min, "cpus_per_task": self.cpus_per_task,
            "mem": f"{self.mem_gb:g}GB", "array_parallelism": self.array_parallelism,
            "setup": list(self.setup), "additional_parameters": {"requeue": True},
        }
        if self.gpus_per_task:
            params["gpus_per_task"] = self.gpus_per_task
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key):
                params[key] = getattr(self, key)
        return params


@dataclass(frozen=True)
class ShardTask(submitit.helpers.Checkpointable):
    """One shard of a sweep, as a picklable callable for submitit.

    Calling it runs :func:`lielib.book.sweep.run_sweep` for ``shard`` and returns its
    status. Being checkpointable, a preempted or timed-out task is requeued as it is;
    it then skips the models that have tables.
    """

    chapter: str
    set_name: str
    shard: tuple[int, int]
    out: str
    command: str
    only: tuple[str, ...] | None = None
    params: dict[str, str] = field(default_factory=dict)
    force: bool = False
    kernel_per_model: bool = False

    def __call__(self) -> dict[str, list[str]]:
        """Run the shard; ``{"done", "skipped", "failed"}`` model lists."""
        return run_sweep(self.chapter, self.set_name, only=self.only, shard_spec=self.shard,
                         out=self.out, params=self.params, force=self.force,
                         command=self.command, progress=True,
                         kernel_per_model=self.kernel_per_model)


def make_executor(
    kind: str, folder: str | os.PathLike, options: SlurmOptions | None = None
) -> submitit.Executor:
    """A submitit executor: ``local`` (processes here) or ``slurm`` (sbatch; needs ``srun``)."""
    options = options or SlurmOptions()
    if kind == "local":
        executor = submitit.LocalExecutor(folder=str(folder), max_num_timeout=options.max_timeouts)
        executor.update_parameters(timeout_min=options.time_min, setup=list(options.setup))
        return executor
    if kind == "slurm":
        executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=options.max_timeouts)
        executor.update_parameters(**options.sbatch())
        return executor
    raise ValueError(f"unknown executor {kind!r}; use one of {EXECUTORS}")


def submit_shards(
    executor: submitit.Executor,
    chapter: str | os.PathLike,
    set_name: str,
    *,
    shards: int,
    out: str | os.PathLike,
    command: str,
    only: Sequence[str] | None = None,
    params: dict[str, str] | None = None,
    force: bool = False,
    kernel_per_model: bool = False,
) -> list[submitit.Job]:
    """Submit shards ``0..shards-1`` in one batch (one array job on Slurm); their jobs."""
    tasks = [
        ShardTask(str(Path(chapter).resolve()), set_name, (i, shards), str(Path(out).resolve()),
                  command, tuple(only) if only else None, dict(params or {}), force,
                  kernel_per_model)
        for i in range(shards)
    ]
    with executor.batch():
        jobs = [executor.submit(task) for task in tasks]
    return jobs


def wait(jobs: Sequence[submitit.Job]) -> tuple[dict[str, list[str]], dict[int, str]]:
    """Wait for every shard; the merged model status and, per shard that died, why.

    A shard that raised or was killed leaves its finished models' tables; its other models
    are neither done nor failed here, and a rerun picks them up.
    """
    status: dict[str, list[str]] = {"done": [], "skipped": [], "failed": []}
    died: dict[int, str] = {}
    for i, job in enumerate(jobs):
        try:
            result = job.result()
        except (submitit.core.utils.UncompletedJobError, OSError) as err:
            lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
            died[i] = f"{type(err).__name__}: {' | '.join(lines[-3:])[:1000]}"
            continue
        for key in status:
            status[key] += result.get(key, [])
    return status, died
