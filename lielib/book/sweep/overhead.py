"""The sweep's cost per model beyond measuring: one kernel per model against one per shard.

``python -m lielib.book.sweep.overhead [--models zoo-init] [--count 10] [--repeats 2]``
runs the worker chapter over the first ``count`` models of a set as one shard, in both
modes, ``repeats`` times (alternating), and writes ``results/sweep/overhead.json``. The
overhead per model is ``(W - sum_m T_m) / count``, where ``W`` is the wall time of the
whole sweep command (interpreter start, imports, kernels, model creation, images, files)
and ``T_m`` is the time inside :func:`lielib.book.modelsets.measure` for model ``m``
(``lee``; the sample-based metrics are switched off).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..results import meta_path
from .core import ROOT, result_path

__all__ = ["main", "measure_overhead"]

WORKER = "chapters/workers/measure_model.py"


def _one_run(models: list[str], set_name: str, out: Path, n_images: int, per_model: bool,
             env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "lielib.book.sweep", WORKER, "--models", set_name,
           "--only", *models, "--out", str(out), "--no-progress", "-p", "n_images", str(n_images),
           "-p", "metrics", "false", "-p", "threads", "1"]
    if per_model:
        cmd.append("--kernel-per-model")
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"sweep failed ({res.returncode}): {res.stdout[-2000:]}{res.stderr[-2000:]}")
    metas = [json.loads(meta_path(result_path(out, m)).read_text()) for m in models]
    measure = sum(m["measure_seconds"] for m in metas)
    load = sum(m["load_seconds"] for m in metas)
    return {"wall_s": round(wall, 2), "measure_s": round(measure, 2), "load_s": round(load, 2),
            "overhead_per_model_s": round((wall - measure) / len(models), 3)}


def measure_overhead(
    set_name: str = "zoo-init", *, count: int = 10, repeats: int = 2, n_images: int = 2
) -> dict[str, Any]:
    """Run both modes ``repeats`` times over the first ``count`` models of ``set_name``.

    Returns:
        ``{"models": [...], "runs": {mode: [run, ...]}, "summary": {mode: {...}}}``, where a
        run holds ``wall_s``, ``measure_s``, ``load_s`` and ``overhead_per_model_s``.
    """
    from ..modelsets import set_models
    from ..paths import cache_dir

    models = set_models(set_name)[:count]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TIMM_FUSED_ATTN": "0"}
    runs: dict[str, list[dict[str, Any]]] = {"kernel per model": [], "kernel per shard": []}
    with tempfile.TemporaryDirectory() as tmp:
        env["LIELIB_CACHE"] = str(Path(tmp) / "cache")  # notebooks and tables: thrown away
        checkpoints = cache_dir("zoo")  # but the zoo's checkpoints are the real ones
        if checkpoints.is_dir():
            (Path(tmp) / "cache").mkdir()
            (Path(tmp) / "cache" / "zoo").symlink_to(checkpoints.resolve(), target_is_directory=True)
        for r in range(repeats):
            modes = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for mode in modes:
                out = Path(tmp) / f"{mode.replace(' ', '-')}-{r}"
                runs[mode].append(_one_run(models, set_name, out, n_images,
                                           mode == "kernel per model", env))
                print(mode, runs[mode][-1], flush=True)
    summary = {
        mode: {"overhead_per_model_s_mean": round(statistics.mean(
                   x["overhead_per_model_s"] for x in rs), 3),
               "overhead_per_model_s_range": [min(x["overhead_per_model_s"] for x in rs),
                                              max(x["overhead_per_model_s"] for x in rs)],
               "wall_s_mean": round(statistics.mean(x["wall_s"] for x in rs), 2),
               "measure_s_mean": round(statistics.mean(x["measure_s"] for x in rs), 2)}
        for mode, rs in runs.items()
    }
    return {"set": set_name, "models": models, "n_images": n_images, "repeats": repeats,
            "runs": runs, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    from ..results import OutputPathError, check_output, metadata, write_json

    p = argparse.ArgumentParser(prog="python -m lielib.book.sweep.overhead",
                                description=__doc__.split("\n")[0])
    p.add_argument("--models", default="zoo-init", help="model set (first --count models)")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--n-images", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "results" / "sweep" / "overhead.json"))
    args = p.parse_args(argv)
    for name in ("count", "repeats", "n_images"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    try:
        out = check_output(args.out, "--out", folder=False, suffix=".json")
    except OutputPathError as err:
        p.error(f"{err} (the figures are written as one .json file)")
    try:
        from ..modelsets import preflight, set_models

        preflight(args.models, set_models(args.models)[:args.count])
    except (ValueError, FileNotFoundError) as err:
        p.error(str(err))
    figures = measure_overhead(args.models, count=args.count, repeats=args.repeats,
                               n_images=args.n_images)
    load = os.getloadavg()
    command = shlex.join(["python", "-m", "lielib.book.sweep.overhead",
                          *(sys.argv[1:] if argv is None else argv)])
    figures["metadata"] = metadata(command=command, seed=0, device="cpu",
                                   load_average_1_5_15=[round(v, 2) for v in load])
    write_json(out, figures)
    for mode, s in figures["summary"].items():
        print(f"{mode}: {s['overhead_per_model_s_mean']:.2f} s overhead per model "
              f"(runs {s['overhead_per_model_s_range']}), wall {s['wall_s_mean']:.1f} s")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
