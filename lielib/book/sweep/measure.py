"""What the worker chapter does for its shard: load, measure and write each model in turn."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .core import run_models

__all__ = ["measure_models"]


def measure_models(
    models: Sequence[str],
    *,
    set_name: str,
    out: str | os.PathLike,
    n_images: int = 64,
    actions: Sequence[str] | None = None,
    metrics: bool = True,
    imagenet: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    seed: int = 0,
    device: Any = "cpu",
    command: str | None = None,
) -> dict[str, list[str]]:
    """Measure ``models`` of ``set_name`` one after another in this process.

    Each model's table (:func:`lielib.book.modelsets.measure`, one row per image) goes to
    ``out/<model>.csv`` with its metadata, including ``load_seconds`` (model and images)
    and ``measure_seconds`` (``lee`` and, with ``metrics``, the sample-based metrics).
    A failing model is recorded in ``out/failures/`` and the next one starts
    (:func:`lielib.book.sweep.run_models`); unknown or repeated ``actions`` fail before
    the first model (:func:`lielib.book.sweep.inputs.check_actions`).

    Returns:
        ``{"done": [...], "failed": [...]}``.
    """
    from ..modelsets import DEFAULT_ACTIONS, load_subject, measure
    from ..results import metadata, write_table
    from .inputs import check_actions

    actions = check_actions(list(actions if actions is not None else DEFAULT_ACTIONS))

    def one(model: str, target: Path) -> None:
        start = time.perf_counter()
        subject = load_subject(set_name, model, n_images=n_images, seed=seed,
                               imagenet=imagenet or None, data_root=data_root or None)
        loaded = time.perf_counter()
        table = measure(subject, model=model, set_name=set_name, actions=actions,
                        metrics=metrics, seed=seed, device=device)
        end = time.perf_counter()
        info = {k: v for k, v in subject.info.items() if k != "image_ids"}
        meta = metadata(
            command=command or None, seed=seed, device=device, model=model, set=set_name,
            models=[model], parameters={"n_images": n_images, "actions": actions,
                                        "metrics": metrics, "imagenet": str(imagenet or "")},
            image_ids=subject.info["image_ids"], seconds=round(end - start, 3),
            load_seconds=round(loaded - start, 3), measure_seconds=round(end - loaded, 3),
            **info,
        )
        write_table(target, table, meta)

    return run_models(models, out, one, command=command or None)
