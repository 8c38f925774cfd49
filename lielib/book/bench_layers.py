"""Benchmark of the layer-wise decomposition: exact against the paper's 100 probes.

``python -m lielib.book.bench`` calls :func:`bench_layerwise`; ``python -m lielib.book.bench_layers``
runs it alone and prints JSON. Both methods run in the same process on the same image,
so their ratio is meaningful even on a shared, noisy machine; absolute times are not.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lielib import get_action, layerwise_contributions

from .bench import check_timm_models

__all__ = ["bench_layerwise"]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_layerwise(
    *,
    model_name: str = "resnet50",
    image_size: int = 224,
    num_images: int = 1,
    num_probes: int = 100,
    action: str = "translate_x",
    seed: int = 0,
    num_threads: int | None = None,
    chunk_size: int = 16,
    device: str = "cpu",
    num_classes: int = 1000,
    target_precision: float = 0.05,
) -> dict:
    """Seconds per image of the exact decomposition and of the probe estimator.

    ``ratio = t_probes / t_exact``; also reports the plain forward time, the number of
    measured modules, the exact method's sum-rule error
    ``max |sum_m J_{>m} L m + r - L f| / max |L f|`` (zero up to rounding by construction
    of ``r``; the residual's share is reported instead) and the probes' mean relative
    deviation from the exact values, ``sum_m |v_probe - v_exact| / sum_m v_exact``.

    The exact method has no variance; each probe term is ``||v||^2 chi^2_1``, so matching
    a relative standard deviation ``p`` per module takes ``2 / p^2`` probes (800 for 5%).
    ``ratio_at_precision`` extrapolates the probe time linearly to that many probes.

    Args:
        model_name: a timm architecture; random-init weights (seeded) are used.
        num_threads: torch CPU threads for the run (restored afterwards).
        num_classes: the head's size; with few classes the exact method runs in reverse
            mode (one backward pass per class).
    """
    import timm  # the benchmark may import timm; the core library does not

    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        with torch.random.fork_rng(devices=[]):  # timm initialises from the global RNG
            torch.manual_seed(seed)
            model = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
        model = model.to(device).eval()
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(num_images, 3, image_size, image_size, generator=gen).to(device)
        with torch.no_grad():
            model(x)
            _, t_fwd = _timed(lambda: model(x))
        # warm up the code paths both methods share (recording, module Lie derivatives)
        layerwise_contributions(model, x, action, method="probes", num_probes=1, seed=seed)
        exact, t_exact = _timed(lambda: layerwise_contributions(
            model, x, action, method="exact", chunk_size=chunk_size))
        probes, t_probes = _timed(lambda: layerwise_contributions(
            model, x, action, method="probes", num_probes=num_probes, seed=seed))
    finally:
        torch.set_num_threads(old_threads)
    ve, vp = exact.values[:-1].double(), probes.values[:-1].double()
    probes_needed = 2.0 / target_precision**2
    return {
        "model": model_name,
        "image_size": image_size,
        "num_images": num_images,
        "action": action,
        "num_modules": len(exact.sites),
        "num_probes": num_probes,
        "exact_mode": exact.mode,
        "chunk_size": chunk_size,
        "threads": num_threads if num_threads is not None else old_threads,
        "device": device,
        "forward_s_per_image": t_fwd / num_images,
        "exact_s_per_image": t_exact / num_images,
        "probes_s_per_image": t_probes / num_images,
        "ratio_probes_over_exact": t_probes / t_exact,
        "target_precision": target_precision,
        "probes_for_target_precision": probes_needed,
        "ratio_at_precision": t_probes * probes_needed / num_probes / t_exact,
        "num_classes": num_classes,
        "residual_share": float(exact.values[-1].sum() / exact.values.sum()),
        "probe_rel_deviation": float((vp - ve).abs().sum() / ve.sum()),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lielib.book.bench_layers",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--num-probes", type=int, default=100)
    ap.add_argument("--action", default="translate_x")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--num-classes", type=int, default=1000)
    args = ap.parse_args(argv)
    for name in ("image_size", "num_probes", "chunk_size", "num_classes", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    try:
        check_timm_models([args.model])
        get_action(args.action)
    except ValueError as err:
        ap.error(str(err))
    res = bench_layerwise(model_name=args.model, image_size=args.image_size,
                          num_probes=args.num_probes, action=args.action,
                          num_threads=args.threads, chunk_size=args.chunk_size,
                          num_classes=args.num_classes)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
