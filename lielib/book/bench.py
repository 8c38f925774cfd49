"""``python -m lielib.book.bench``: lielib against the paper's way of computing LEE.

End to end: ``lee`` (all actions share one primal pass, tangents batched with ``vmap``,
one derivative per basis element of the generators' span; also timed without that
sharing) against a paper-style baseline (one double-backward JVP per action and per image,
batch 1), on the same images, in the same run; and the sensitivity ratio
(:func:`lielib.sensitivity_ratio`, ``--references`` shared references per image) against
``lee``. Layer-wise: the exact decomposition against the 100-probe estimator
(``--layerwise``).

Reported: seconds per image, the ratio, and *forward passes per action*
(time / (K x one plain forward pass)), whose floor is about (1 + K) / K.
Random-init weights: the cost does not depend on the weights.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable

import torch

from lielib import lee, lie_derivative_double_backward, measuring, sensitivity_ratio
from lielib.lie import reduce_classes

from .results import check_output, metadata, write_json

__all__ = ["ACTIONS", "bench_end_to_end", "check_device", "check_timm_models", "main"]

ACTIONS = ["translate_x", "translate_y", "rotate", "shear_x", "shear_y", "saturate"]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - start)
    return best


def paper_style_lee(model: torch.nn.Module, x: torch.Tensor, actions=ACTIONS) -> torch.Tensor:
    """The paper's procedure: for each image, for each action, one double-backward JVP."""
    out = torch.empty(len(actions), x.shape[0], device=x.device)
    with measuring(model):
        for i in range(x.shape[0]):
            for k, action in enumerate(actions):
                d = lie_derivative_double_backward(lambda z: model(z).softmax(-1), x[i : i + 1], action)
                out[k, i] = reduce_classes(d, "mean_abs")[0]
    return out


def bench_end_to_end(
    model_name: str,
    *,
    images: int = 4,
    size: int = 224,
    repeats: int = 2,
    seed: int = 0,
    device: str = "cpu",
    references: int = 8,
) -> dict:
    """Time lielib's ``lee``, the paper-style baseline and the sensitivity ratio on one timm model.

    ``sensitivity_over_lee`` is the time of :func:`lielib.sensitivity_ratio` (``references``
    shared references per image, raw LEE from the same pass) over ``lee``'s.
    """
    import timm

    _check_counts(images=images, repeats=repeats, references=references)

    kwargs = {"img_size": size} if "vit" in model_name else {}
    with torch.random.fork_rng(devices=[]):  # timm initialises from the global RNG
        torch.manual_seed(seed)
        model = timm.create_model(model_name, pretrained=False, **kwargs)
    model = model.to(device).eval()
    x = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(device)
    with measuring(model), torch.no_grad():
        model(x)  # warm up
        t_forward = _best_of(lambda: model(x), repeats) / images
    ours_frame = lee(model, x, ACTIONS)  # warm up, and the values to compare
    t_ours = _best_of(lambda: lee(model, x, ACTIONS), repeats) / images
    # the same without sharing derivatives across the span of the generators (6 JVPs, not 5)
    t_unshared = _best_of(lambda: lee(model, x, ACTIONS, share=False), 1) / images
    rho_frame = sensitivity_ratio(model, x, ACTIONS, references=references)  # warm up
    t_rho = _best_of(lambda: sensitivity_ratio(model, x, ACTIONS, references=references),
                     repeats) / images
    rho_lee = rho_frame.pivot(index="image", columns="action", values="lee")[ACTIONS]
    rho_lee_agrees = bool(torch.allclose(torch.tensor(rho_lee.to_numpy()),
                                         torch.tensor(ours_frame.to_numpy()), rtol=1e-4, atol=1e-9))
    # the baseline costs minutes per model: one timed run over all images, whose values
    # are also the reference for the agreement check
    _sync()
    start = time.perf_counter()
    baseline = paper_style_lee(model, x)
    _sync()
    t_paper = (time.perf_counter() - start) / images
    agree = torch.allclose(
        torch.tensor(ours_frame.to_numpy().T, dtype=torch.float32), baseline.cpu(), rtol=1e-3,
        atol=1e-7,
    )
    k = len(ACTIONS)
    return {
        "model": model_name,
        "size": size,
        "images": images,
        "actions": ACTIONS,
        "forward_s_per_image": t_forward,
        "lielib_s_per_image": t_ours,
        "lielib_unshared_s_per_image": t_unshared,
        "paper_style_s_per_image": t_paper,
        "speedup": t_paper / t_ours,
        "lielib_forward_passes_per_action": t_ours / (k * t_forward),
        "paper_style_forward_passes_per_action": t_paper / (k * t_forward),
        "values_agree": bool(agree),
        "references": references,
        "sensitivity_s_per_image": t_rho,
        "sensitivity_over_lee": t_rho / t_ours,
        "sensitivity_lee_agrees": rho_lee_agrees,
        "rho_mean": float(rho_frame["rho"].mean()),
        "rho_se_over_rho_median": float((rho_frame["rho_se"] / rho_frame["rho"]).median()),
    }


def _check_counts(**counts: int) -> None:
    """Positive integers only: a count of 0 makes no timing (and divides by zero)."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        minimum = 2 if name == "references" else 1
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_timm_models(names: list[str]) -> None:
    """Raise ``ValueError`` naming each of ``names`` that timm does not know, with close names."""
    import difflib

    import timm

    unknown = [n for n in names if not timm.is_model(n)]
    if unknown:
        known = timm.list_models()
        hints = "; ".join(f"{n!r} (close: {', '.join(difflib.get_close_matches(n, known, n=3)) or 'none'})"
                          for n in unknown)
        raise ValueError(f"unknown timm model(s): {hints}; list names with "
                         "timm.list_models('resnet*')")


def check_device(device: str) -> None:
    """Raise ``ValueError`` when ``device`` is not ``cpu`` or an available CUDA device."""
    if device != "cpu" and not (device.startswith("cuda") and torch.cuda.is_available()):
        raise ValueError(f"device {device!r} is not available here; pass cpu"
                         + (" or cuda" if torch.cuda.is_available() else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lielib.book.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_small_patch16_224"])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--references", type=int, default=8,
                        help="shared references per image of the sensitivity ratio")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--layerwise", action="store_true", help="also time layer-wise exact vs probes")
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--out", default=None, help="write the figures here (a .json file)")
    args = parser.parse_args(argv)
    try:  # everything that can be wrong with the command, before minutes of timing
        out = check_output(args.out, "--out", folder=False, suffix=".json") if args.out else None
        if not args.skip_end_to_end:
            check_timm_models(args.models)
        check_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    for name in ("images", "repeats", "size", "references"):
        minimum = 2 if name == "references" else 1
        if getattr(args, name) < minimum:
            parser.error(f"--{name} must be >= {minimum}, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"# lielib.book.bench on {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    if not args.skip_end_to_end:
        print("| model | px | paper-style s/img | lielib s/img | speedup | fwd passes/action "
              "(paper, lielib) | lielib unshared s/img | sensitivity ratio s/img (x lee) |")
        print("|---|---|---|---|---|---|---|---|")
        for name in args.models:
            r = bench_end_to_end(
                name, images=args.images, size=args.size, repeats=args.repeats, device=args.device,
                references=args.references,
            )
            rows.append(r)
            print(
                f"| {name} | {args.size} | {r['paper_style_s_per_image']:.3f} | "
                f"{r['lielib_s_per_image']:.3f} | {r['speedup']:.1f}x | "
                f"{r['paper_style_forward_passes_per_action']:.1f}, "
                f"{r['lielib_forward_passes_per_action']:.1f} | "
                f"{r['lielib_unshared_s_per_image']:.3f} | "
                f"{r['sensitivity_s_per_image']:.3f} ({r['sensitivity_over_lee']:.2f}x) |"
                + ("" if r["values_agree"] and r["sensitivity_lee_agrees"] else "  (VALUES DIFFER)"),
                flush=True,
            )
    if args.layerwise:
        from .bench_layers import bench_layerwise

        print("| layer-wise, resnet50, one image | classes | exact s/img (mode) | 100 probes s/img | "
              "ratio | ratio at 5% precision |")
        print("|---|---|---|---|---|---|")
        for classes in (1000, 10):
            r = bench_layerwise(num_threads=args.threads, num_classes=classes, device=args.device)
            rows.append(r)
            print(
                f"| {r['model']} {r['image_size']} px, {r['num_modules']} modules | {classes} | "
                f"{r['exact_s_per_image']:.1f} ({r['exact_mode']}) | {r['probes_s_per_image']:.1f} | "
                f"{r['ratio_probes_over_exact']:.2f}x | {r['ratio_at_precision']:.1f}x |",
                flush=True,
            )
    if out is not None:
        meta = metadata(device=args.device, seed=0, threads=torch.get_num_threads())
        write_json(out, {"metadata": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
