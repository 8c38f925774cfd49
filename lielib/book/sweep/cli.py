"""``python -m lielib.book.sweep``: run a shard here, or submit every shard, then merge."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from .core import ROOT, failure_path, is_complete, notebook_dir, parse_shard, run_sweep
from .inputs import FOLDER_PARAMETERS, SweepError, check_folder, shard_todo
from .merging import merge

__all__ = ["main"]

USAGE = """\
python -m lielib.book.sweep CHAPTER --models SET [--only NAME ...] [--out DIR] [-p KEY VALUE ...]
       [--force] [--kernel-per-model]
       [--shard i/n]                                  one shard, here
       [--executor local|slurm --shards N [options]]  every shard, through submitit
python -m lielib.book.sweep merge DIR [--models SET] [--output FILE]"""


def _merge_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m lielib.book.sweep merge",
                                description="Merge a sweep's per-model tables into one.")
    p.add_argument("dir", help="the sweep's --out folder")
    p.add_argument("--models", help="the model set (orders rows, lists missing models)")
    p.add_argument("--output", help="merged table (default DIR.csv)")
    args = p.parse_args(argv[1:])
    try:
        path, table = merge(args.dir, set_name=args.models, output=args.output,
                            command=shlex.join(["python", "-m", "lielib.book.sweep", *argv]))
    except SweepError as err:
        p.error(str(err))
    n = table["model"].nunique() if "model" in table else len(table)
    print(f"merged {n} models, {len(table)} rows -> {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lielib.book.sweep", usage=USAGE,
                                description="Run a worker chapter over a model set, a shard "
                                "per papermill kernel; resume, submit, merge.")
    p.add_argument("chapter", help="a jupytext .py worker with `models` and `out` parameters")
    p.add_argument("--models", required=True, help="model set: zoo, zoo-init, lite or paper")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these models of the set")
    p.add_argument("--out", help="per-model results folder (default results/<chapter>/<set>)")
    p.add_argument("-p", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="a worker parameter (repeatable), typed like its default in the worker: "
                   "true/false, numbers, JSON lists ('[\"rotate\"]'), text")
    p.add_argument("--force", action="store_true", help="rerun models that have results")
    p.add_argument("--kernel-per-model", action="store_true",
                   help="a fresh kernel for every model (slower; isolates crashes)")
    p.add_argument("--no-progress", action="store_true", help="do not stream the kernel's output")
    p.add_argument("--shard", help="i/n: run shard i (0-based) of n in this process")
    s = p.add_argument_group("executors (submitit)")
    s.add_argument("--executor", choices=("local", "slurm"),
                   help="submit --shards shards: local processes, or one Slurm array job")
    s.add_argument("--shards", type=int, help="number of shards (local default: CPU count)")
    s.add_argument("--wait", action="store_true",
                   help="slurm: wait for the array, then merge (local always waits)")
    s.add_argument("--log-dir", help="submitit's folder (a shared filesystem on a cluster; "
                   "default $LIELIB_CACHE/sweeps/<chapter>-<set>/submitit)")
    s.add_argument("--partition")
    s.add_argument("--gpus-per-task", type=int, default=0)
    s.add_argument("--cpus-per-task", type=int, default=4)
    s.add_argument("--mem-gb", type=float, default=16)
    s.add_argument("--time", type=int, default=120, metavar="MINUTES",
                   help="time limit per shard (requeued up to --max-timeouts times)")
    s.add_argument("--array-parallelism", type=int, default=64, help="shards running at once")
    s.add_argument("--account")
    s.add_argument("--qos")
    s.add_argument("--constraint")
    s.add_argument("--setup", action="append", default=[], metavar="SHELL",
                   help="a shell line run before each shard, e.g. 'module load cuda' (repeatable)")
    s.add_argument("--max-timeouts", type=int, default=3)
    return p


def _submit(args: argparse.Namespace, params: dict[str, str], command: str) -> int:
    from .executors import SlurmOptions, make_executor, submit_shards, wait

    if args.shard:
        raise SweepError("--shard runs one shard here; with --executor pass --shards N instead")
    if args.executor == "slurm" and args.shards is None:
        raise SweepError("--executor slurm needs --shards N (one array task per shard)")
    shards = args.shards if args.shards is not None else (os.cpu_count() or 1)
    models, extra, _ = shard_todo(args.chapter, args.models, only=args.only, params=params)
    params = {**params, **{k: extra[k] for k in FOLDER_PARAMETERS if k in params}}  # absolute
    chapter = Path(args.chapter).resolve()
    out = check_folder(args.out or ROOT / "results" / chapter.stem / args.models, "--out")
    folder = check_folder(args.log_dir or notebook_dir(chapter, out) / "submitit", "--log-dir")
    options = SlurmOptions(
        partition=args.partition, gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, time_min=args.time,
        array_parallelism=args.array_parallelism, account=args.account, qos=args.qos,
        constraint=args.constraint, setup=tuple(args.setup), max_timeouts=args.max_timeouts)
    executor = make_executor(args.executor, folder / "%j", options)
    jobs = submit_shards(executor, chapter, args.models, shards=shards, out=out, command=command,
                         only=args.only, params=params, force=args.force,
                         kernel_per_model=args.kernel_per_model)
    merge_cmd = f"python -m lielib.book.sweep merge {shlex.quote(str(out))} --models {args.models}"
    print(f"submitted {shards} shards ({args.executor}): jobs {', '.join(j.job_id for j in jobs)}; "
          f"logs in {folder}", flush=True)
    if args.executor == "slurm" and not args.wait:
        print(f"when the array has finished: {merge_cmd}")
        return 0
    status, died = wait(jobs)
    for i, why in died.items():
        print(f"shard {i}/{shards} did not finish: {why}")
    missing = [m for m in models if not is_complete(out, m)]
    _report(status, out)
    if missing:
        print(f"not merged: {len(missing)} models have no table ({', '.join(missing[:10])}"
              f"{', ...' if len(missing) > 10 else ''}); failures are in {out / 'failures'}. "
              f"Run the same command again to resume, or merge what is there: {merge_cmd}")
        return 1
    path, table = merge(out, set_name=args.models, command=merge_cmd)
    print(f"merged {len(models)} models, {len(table)} rows -> {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; ``--help`` lists every option."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        return _merge_main(argv)
    p = _parser()
    args = p.parse_args(argv)
    _check_counts(p, args)
    params: dict[str, str] = {}
    for key, value in args.p or []:
        if key in params and params[key] != value:
            p.error(f"-p {key} is given twice ({params[key]!r} and {value!r}); keep one")
        params[key] = value
    command = shlex.join(["python", "-m", "lielib.book.sweep", *argv])
    try:
        if args.executor:
            return _submit(args, params, command)
        status = run_sweep(
            args.chapter, args.models, only=args.only,
            shard_spec=parse_shard(args.shard or "0/1"), out=args.out, params=params,
            force=args.force, command=command, progress=not args.no_progress,
            kernel_per_model=args.kernel_per_model)
    except SweepError as err:
        p.error(str(err))
    out = check_folder(args.out or ROOT / "results" / Path(args.chapter).stem / args.models, "--out")
    _report(status, out)
    return 1 if status["failed"] else 0


def _check_counts(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Counts and sizes must be positive (``--gpus-per-task`` may be 0, timeouts 0 or more)."""
    for name in ("shards", "cpus_per_task", "mem_gb", "time", "array_parallelism"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} {value}: must be positive")
    for name in ("gpus_per_task", "max_timeouts"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be 0 or more")
    if args.shard and args.shards:
        p.error("--shard i/n runs one shard here and --shards N submits N through --executor: "
                "pass one of them")
    if args.shards and not args.executor:
        p.error(f"--shards {args.shards} needs --executor local or slurm "
                "(or run one shard here with --shard i/n)")


def _report(status: dict[str, list[str]], out: Path) -> None:
    """The counts, and for each failed model the first line of its recorded error."""
    print(f"done {len(status['done'])}, already there {len(status['skipped'])}, failed "
          f"{len(status['failed'])}" + (f": {', '.join(status['failed'])}" if status["failed"] else ""))
    for model in status["failed"]:
        try:
            error = json.loads(failure_path(out, model).read_text())["error"]
        except (OSError, ValueError, KeyError):
            error = "no failure record"
        print(f"FAILED {model}: {error[:600]} (details: {failure_path(out, model)})")
