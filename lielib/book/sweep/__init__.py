"""Sweeps: a worker chapter over a model set, one papermill kernel per shard; resume, merge.

Usage::

    python -m lielib.book.sweep CHAPTER --models SET [--only NAME ...] [--out DIR]
                                [-p key value ...] [--force] [--kernel-per-model]
                                [--shard i/n | --executor local|slurm --shards N ...]
    python -m lielib.book.sweep merge DIR [--models SET] [--output FILE]

The worker ``CHAPTER`` (a jupytext ``.py`` notebook with a cell tagged ``parameters``)
declares ``models`` and ``out``; the sweep passes the models of a shard that have no table
yet, the results folder ``DIR``, ``source`` (the set) and ``command`` (recorded in every
table's metadata), plus any ``-p key value``. One kernel measures the whole shard through
:func:`run_models`, which writes ``DIR/<model>.csv`` atomically
(:func:`lielib.book.results.write_table`): a model is done exactly when its file exists,
and a rerun measures only what is missing (a table whose metadata is missing or does
not match counts as missing). A failing model is recorded in
``DIR/failures/<model>.json`` (removed when it later succeeds) and the shard goes on; a
model that kills the kernel is recorded the same way and the rest of the shard continues
in a new kernel.

``--shard i/n`` runs the models at positions ``k`` with ``k mod n = i``, so ``n`` shards
cover every model exactly once. ``--executor local`` runs ``--shards N`` shards as
parallel processes here; ``--executor slurm`` submits them as one Slurm array job (one task
per shard, requeued on preemption) through submitit (:mod:`.executors`). ``merge``
concatenates the per-model tables ``DIR/*.csv`` into ``DIR.csv`` with metadata that says
the sweep produced it; it runs after the local shards finish, or on its own later. It
skips the dot-file temporaries of an interrupted write and refuses (listing each file and
what to do) tables without matching metadata, without rows, with other columns than the
rest, or whose rows name another model than their file (:mod:`.merging`).
"""

from .core import (
    failure_path,
    is_complete,
    parse_shard,
    result_path,
    run_models,
    run_sweep,
    shard,
)
from .inputs import RESERVED, SweepError, chapter_parameters, coerce_parameter, shard_todo
from .measure import measure_models
from .merging import merge, read_model_table

__all__ = [
    "RESERVED",
    "SweepError",
    "chapter_parameters",
    "coerce_parameter",
    "failure_path",
    "is_complete",
    "measure_models",
    "merge",
    "parse_shard",
    "read_model_table",
    "result_path",
    "run_models",
    "run_sweep",
    "shard",
    "shard_todo",
]
