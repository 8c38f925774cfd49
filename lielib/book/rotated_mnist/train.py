"""Resumable training of the rotated-MNIST experiment: MAE pretraining and fine-tuning.

Both stages go through :func:`lielib.book.training.fit` (AdamW, linear warm-up then
cosine decay, gradient clipping). At the end of every epoch the stage writes, atomically:

* ``<folder>/<name>/epoch_XXX.pt``: the weights (fine-tuning; ``epoch_000`` is the
  model training starts from, with BatchNorm statistics re-estimated on training digits);
* ``<folder>/<name>/state.pt``: weights, optimiser, the data generator's state and the
  rows so far, from which a killed run resumes at the last finished epoch and continues
  exactly as if it had not been stopped.

``<folder>`` is ``cache_dir("rotated_mnist", "<config fingerprint>")`` by default, so a
run with other training parameters never resumes from these files.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..training import (
    accuracy,
    batches,
    fit,
    load_checkpoint,
    recalibrate_batchnorm,
    save_checkpoint,
)
from .config import ExperimentConfig, parse_variant
from .data import load_pretraining_digits, load_rotated_mnist, load_upright_digits, rotate_digits
from .mae import MAE, zero_reference
from .models import build_model, param_groups

__all__ = ["batch_stream", "build_mae", "classifier", "pretrain", "train_variant", "training_digits"]

Log = Callable[[str], None]


def _rotate(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return rotate_digits(xb, torch.rand(len(xb), generator=gen, dtype=torch.float64) * 2 * math.pi)


def batch_stream(x: torch.Tensor, y: torch.Tensor | None, *, batch_size: int, gen: torch.Generator,
                 rotate: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The book's seeded batches (:func:`lielib.book.training.batches`), rotated on request.

    With ``rotate`` every digit is turned by a fresh angle ``U[0, 2 pi)`` each time it is
    drawn (:func:`~lielib.book.rotated_mnist.data.rotate_digits`).
    """
    return batches(x, y, batch_size=batch_size, gen=gen, augment=_rotate if rotate else None)


def build_mae(cfg: ExperimentConfig) -> MAE:
    """The MAE of ``cfg`` around a fresh ViT, initialised from ``cfg.seed`` on a forked RNG."""
    encoder = build_model("vit", seed=cfg.seed, **_arch(cfg))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        return MAE(encoder, decoder_dim=cfg.decoder_dim, decoder_depth=cfg.decoder_depth,
                   mask_ratio=cfg.mask_ratio)


def _arch(cfg: ExperimentConfig) -> dict:
    return {"embed_dim": cfg.embed_dim, "depth": cfg.depth, "num_heads": cfg.num_heads,
                "mlp_ratio": cfg.mlp_ratio, "patch_size": cfg.patch_size, "cnn_width": cfg.cnn_width}


def _resume(path: Path, fingerprint: str) -> dict | None:
    if not path.is_file():
        return None
    state = load_checkpoint(path)
    if state.get("fingerprint") != fingerprint:
        raise ValueError(f"{path} belongs to another configuration ({state.get('fingerprint')} != "
                         f"{fingerprint}); use another cache folder")
    return state


def pretrain(cfg: ExperimentConfig, folder: Path, *, log: Log = print, progress: bool = False) -> dict:
    """Pretrain the MAE on the upright held-out digits, resuming from ``folder/pretrain/state.pt``.

    Every epoch records the mean training loss, the loss on 1,000 upright test-split digits
    (fixed masks) and both zero-prediction references (:func:`~.mae.zero_reference`).

    Returns:
        The final state: ``{"mae": state_dict, "rows": [...], "epoch", ...}``.
    """
    path = folder / "pretrain" / "state.pt"
    state = _resume(path, cfg.fingerprint())
    if state is not None and state["epoch"] == cfg.mae_epochs:
        return state
    dev = torch.device(cfg.device)
    digits, _ = load_pretraining_digits(seed=cfg.seed, size=cfg.pretrain_size)
    val = load_upright_digits("test", seed=cfg.seed, size=min(1_000, cfg.pretrain_size))
    ref, val_ref = zero_reference(digits, cfg.patch_size), zero_reference(val, cfg.patch_size)
    mae = build_mae(cfg).to(dev)
    opt = torch.optim.AdamW(param_groups(mae, weight_decay=cfg.weight_decay), lr=cfg.mae_lr,
                            betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    rows: list[dict] = []
    if state is not None:
        mae.load_state_dict(state["mae"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        rows = list(state["rows"])
        log(f"mae: resuming after epoch {state['epoch']}")
    per_epoch = len(digits) // cfg.mae_batch_size
    losses: list[torch.Tensor] = []
    clock = [time.perf_counter()]

    def loss_fn(model: MAE, batch: tuple) -> torch.Tensor:
        loss = model(batch[0].to(dev), generator=gen)[0]
        losses.append(loss.detach())
        return loss

    @torch.no_grad()
    def on_step(done: int) -> None:
        if done % per_epoch:
            return
        epoch = done // per_epoch
        was = mae.training
        mae.eval()
        vgen = torch.Generator().manual_seed(cfg.seed + 7)
        val_loss = sum(float(mae(val[i : i + 500].to(dev), generator=vgen)[0]) * len(val[i : i + 500])
                       for i in range(0, len(val), 500)) / len(val)
        mae.train(was)
        rows.append({"epoch": epoch, "loss": float(torch.stack(losses).mean()), "val_loss": val_loss,
                     "zero_reference": ref, "val_zero_reference": val_ref,
                     "seconds": time.perf_counter() - clock[0]})
        losses.clear()
        clock[0] = time.perf_counter()
        save_checkpoint(path, {"mae": mae.state_dict(), "optimizer": opt.state_dict(),
                               "generator": gen.get_state(), "rows": rows, "epoch": epoch,
                               "fingerprint": cfg.fingerprint()})
        log(f"mae epoch {epoch}/{cfg.mae_epochs}: loss {rows[-1]['loss']:.4f}, held-out "
            f"{val_loss:.4f} (zero prediction {ref:.4f}), {rows[-1]['seconds']:.0f} s")

    start = (state["epoch"] if state is not None else 0) * per_epoch
    fit(mae, batch_stream(digits, None, batch_size=cfg.mae_batch_size, gen=gen), loss_fn, opt,
        steps=cfg.mae_epochs * per_epoch, warmup=min(cfg.warmup_epochs * per_epoch, cfg.mae_epochs * per_epoch),
        start=start, log_every=per_epoch, on_step=on_step, desc="mae", progress=progress)
    return load_checkpoint(path)


def classifier(cfg: ExperimentConfig, variant: str, folder: Path) -> nn.Module:
    """The model of ``variant`` before fine-tuning (``mae``: the pretrained encoder, a fresh head)."""
    base = parse_variant(variant).base
    model = build_model("cnn" if base == "cnn" else "vit", seed=cfg.seed, **_arch(cfg))
    if base == "mae":
        mae = load_checkpoint(folder / "pretrain" / "state.pt")["mae"]
        encoder = {k[len("encoder."):]: v for k, v in mae.items()
                   if k.startswith("encoder.") and not k.startswith("encoder.head.")}
        missing, unexpected = model.load_state_dict(encoder, strict=False)
        if unexpected or sorted(missing) != ["head.bias", "head.weight"]:
            raise RuntimeError(f"pretrained encoder does not fit: missing {missing}, unexpected {unexpected}")
    return model


def training_digits(cfg: ExperimentConfig, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits ``variant`` is fine-tuned on: images ``(N, 1, 28, 28)`` and labels ``(N,)``.

    The first ``cfg.train_size`` digits of the rotated training split; for an upright
    variant (``+up``) the same digits in the same order, upright: the MNIST originals
    (``RotatedMNIST.source``) the rotated digits were made from.
    """
    train = load_rotated_mnist("train", seed=cfg.seed, size=cfg.train_size)
    if not parse_variant(variant).upright:
        return train.images, train.labels
    return load_upright_digits("train", seed=cfg.seed, size=cfg.train_size), train.labels


def train_variant(cfg: ExperimentConfig, variant: str, folder: Path, *, log: Log = print,
                  progress: bool = False) -> dict:
    """Fine-tune one variant on its training digits (:func:`training_digits`), resuming per epoch.

    Cross-entropy; AdamW with layer-wise LR decay ``cfg.layer_decay`` for the pretrained
    encoder (1 for the others); ``cfg.warmup_epochs`` of warm-up, cosine decay to 0. After
    every epoch: accuracy and loss on the first ``cfg.eval_size`` test digits; at the end,
    on the first ``cfg.final_eval_size``. Every variant is evaluated on the rotated test digits.

    Returns:
        The final state: ``{"rows": [...], "final": {...}, "epoch", ...}``.
    """
    base, rotate, _ = parse_variant(variant)
    vdir = folder / variant
    path = vdir / "state.pt"
    state = _resume(path, cfg.fingerprint())
    if state is not None and "final" in state:
        return state
    dev = torch.device(cfg.device)
    train_x, train_y = training_digits(cfg, variant)
    test = load_rotated_mnist("test", seed=cfg.seed, size=max(cfg.eval_size, cfg.final_eval_size))
    eval_xy = (test.images[: cfg.eval_size], test.labels[: cfg.eval_size])
    model = classifier(cfg, variant, folder).to(dev)
    decay = cfg.layer_decay if base == "mae" else 1.0
    opt = torch.optim.AdamW(param_groups(model, weight_decay=cfg.weight_decay, layer_decay=decay), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * (1 + ["mae", "scratch", "cnn"].index(base)))
    per_epoch = cfg.train_size // cfg.batch_size
    steps = cfg.epochs * per_epoch
    rows: list[dict] = []
    losses: list[torch.Tensor] = []
    clock = [time.perf_counter()]

    def record(epoch: int, net: nn.Module, train_loss: float) -> None:
        acc, loss = accuracy(net, *eval_xy, device=dev)
        rows.append({"epoch": epoch, "train_loss": train_loss, "test_accuracy": acc, "test_loss": loss,
                     "n_test": len(eval_xy[1]), "seconds": time.perf_counter() - clock[0]})
        save_checkpoint(vdir / f"epoch_{epoch:03d}.pt", {"model": net.state_dict(), "epoch": epoch})
        save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "generator": gen.get_state(), "rows": rows, "epoch": epoch,
                               "fingerprint": cfg.fingerprint()})
        log(f"{variant} epoch {epoch}/{cfg.epochs}: accuracy {acc:.4f}, train loss {train_loss:.4f}, "
            f"{rows[-1]['seconds']:.0f} s")
        clock[0] = time.perf_counter()

    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        rows = list(state["rows"])
        log(f"{variant}: resuming after epoch {state['epoch']}")
    else:
        start_model = copy.deepcopy(model)  # the function training starts from
        recalibrate_batchnorm(start_model, train_x[: cfg.bn_size], device=dev)
        with torch.no_grad():
            init_loss = F.cross_entropy(start_model(train_x[:512].to(dev)), train_y[:512].to(dev))
        record(0, start_model, float(init_loss))

    def loss_fn(m: nn.Module, batch: tuple) -> torch.Tensor:
        loss = F.cross_entropy(m(batch[0].to(dev)), batch[1].to(dev))
        losses.append(loss.detach())
        return loss

    def on_step(done: int) -> None:
        if done % per_epoch == 0:
            record(done // per_epoch, model, float(torch.stack(losses).mean()))
            losses.clear()

    start = rows[-1]["epoch"] * per_epoch
    if start < steps:
        fit(model, batch_stream(train_x, train_y, batch_size=cfg.batch_size, gen=gen, rotate=rotate),
            loss_fn, opt, steps=steps, warmup=min(cfg.warmup_epochs * per_epoch, steps), start=start,
            log_every=per_epoch, on_step=on_step, desc=variant, progress=progress)
    n = cfg.final_eval_size
    acc, loss = accuracy(model, test.images[:n], test.labels[:n], device=dev)
    final = {"test_accuracy": acc, "test_loss": loss, "n_test": n}
    log(f"{variant}: final accuracy {acc:.4f} on {n} test digits")
    state = load_checkpoint(path)
    state["final"] = final
    save_checkpoint(path, state)
    return state
