"""A masked autoencoder (He et al., 2022) around the small timm ViT, and its reference loss.

* A share ``mask_ratio`` of the patches is hidden at random (0.75 in the MAE paper; 0.5 in
  the book's presets, see :mod:`~lielib.book.rotated_mnist.config`); the encoder sees the rest and
  its class token; a light transformer decoder fills the hidden ones with a learned mask
  token and predicts each patch's pixels normalised to zero mean and unit variance.
* Loss: ``sum_l m_l * mean_k (pred_lk - (x_lk - mu_l) / sqrt(var_l + eps))^2 / sum_l m_l``
  over the masked patches ``m_l = 1`` (:func:`mae_loss`).
* Reference: predicting zero (each patch's mean) everywhere, :func:`zero_reference`; the
  pretraining is judged by how far below it the loss ends.
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from .models import unfuse_attention

__all__ = ["MAE", "mae_loss", "normalised_patches", "patchify", "reconstruct", "unpatchify",
           "zero_reference"]


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, L, p*p*C)``, patches in row-major grid order (as timm's PatchEmbed)."""
    b, c, h, w = imgs.shape
    if h % p or w % p:
        raise ValueError(f"image {h}x{w} is not divisible into {p}x{p} patches")
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, p: int, c: int = 1) -> torch.Tensor:
    """``(B, L, p*p*C) -> (B, C, H, W)`` for a square grid, the inverse of :func:`patchify`."""
    b, n, _ = patches.shape
    g = round(n**0.5)
    if g * g != n:
        raise ValueError(f"{n} patches do not form a square grid")
    x = patches.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, g * p, g * p)


def normalised_patches(imgs: torch.Tensor, p: int, eps: float = 1e-6) -> tuple[torch.Tensor, ...]:
    """Each patch standardised: ``((x - mu) / sqrt(var + eps), mu, sqrt(var + eps))``, each ``(B, L, .)``."""
    target = patchify(imgs, p)
    mu, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    sd = (var + eps).sqrt()
    return (target - mu) / sd, mu, sd


def mae_loss(pred: torch.Tensor, imgs: torch.Tensor, mask: torch.Tensor, p: int,
             eps: float = 1e-6) -> torch.Tensor:
    """MAE loss on normalised pixels of the masked patches.

    ``sum_l mask_l * mean_k (pred_lk - (x_lk - mu_l) / sqrt(var_l + eps))^2 / sum_l mask_l``.

    Args:
        pred: ``(B, L, p*p*C)`` reconstructions.
        imgs: ``(B, C, H, W)`` originals.
        mask: ``(B, L)``, 1 for masked (reconstructed) patches, 0 for visible ones.
    """
    target = normalised_patches(imgs, p, eps)[0]
    per_patch = (pred - target).square().mean(-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1)


def zero_reference(imgs: torch.Tensor, p: int, eps: float = 1e-6) -> float:
    """The loss of predicting zero (each patch's own mean) for every patch of ``imgs``.

    Masks are uniform at random, so this is also the expected loss of that prediction
    under any mask ratio: ``mean_{b, l} mean_k target_blk^2``.
    """
    target = normalised_patches(imgs, p, eps)[0]
    return float(target.square().mean())


class MAE(nn.Module):
    """Masked autoencoder around a timm ViT encoder with a light transformer decoder.

    The encoder sees only the visible ``(1 - mask_ratio)`` share of patch tokens (plus
    its class token); the decoder fills the rest with a learned mask token, adds its own
    positional embedding and predicts each patch's normalised pixels.
    """

    def __init__(self, encoder: VisionTransformer, *, decoder_dim: int = 64, decoder_depth: int = 2,
                 decoder_heads: int = 4, mask_ratio: float = 0.75) -> None:
        super().__init__()
        if encoder.num_prefix_tokens != 1 or encoder.cls_token is None or encoder.no_embed_class:
            raise ValueError("MAE expects a ViT with exactly one class token embedded with pos_embed")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.patch = encoder.patch_embed.patch_size[0]
        num_patches = encoder.patch_embed.num_patches
        in_chans = encoder.patch_embed.proj.in_channels
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_dim))
        self.decoder_blocks = unfuse_attention(nn.Sequential(
            *(Block(decoder_dim, decoder_heads, mlp_ratio=2.0) for _ in range(decoder_depth))))
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch**2 * in_chans)
        trunc_normal_(self.mask_token, std=0.02)
        trunc_normal_(self.decoder_pos, std=0.02)

    def _encode(self, imgs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        x = enc.patch_embed(imgs) + enc.pos_embed[:, 1:]
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(len(x), -1, -1)
        x = enc.norm_pre(torch.cat([cls, x], 1))
        return enc.norm(enc.blocks(x))

    def forward(self, imgs: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask, encode, decode.

        Args:
            imgs: ``(B, C, H, W)``.
            generator: a CPU generator for the random masks (the noise is drawn on the CPU
                and moved to ``imgs.device``, so a seed gives the same masks everywhere).

        Returns:
            ``(loss, pred (B, L, p*p*C), mask (B, L))``.
        """
        b = len(imgs)
        num = self.encoder.patch_embed.num_patches
        n_keep = max(1, round(num * (1 - self.mask_ratio)))
        noise = torch.rand(b, num, generator=generator).to(imgs.device)
        order = noise.argsort(1)
        restore = order.argsort(1)
        mask = torch.ones(b, num, device=imgs.device)
        mask[:, :n_keep] = 0
        mask = torch.gather(mask, 1, restore)
        latent = self.decoder_embed(self._encode(imgs, order[:, :n_keep]))
        fill = self.mask_token.expand(b, num - n_keep, -1)
        tokens = torch.cat([latent[:, 1:], fill], 1)
        tokens = torch.gather(tokens, 1, restore[..., None].expand(-1, -1, tokens.shape[-1]))
        x = torch.cat([latent[:, :1], tokens], 1) + self.decoder_pos
        pred = self.decoder_pred(self.decoder_norm(self.decoder_blocks(x)))[:, 1:]
        return mae_loss(pred, imgs, mask, self.patch), pred, mask


@torch.no_grad()
def reconstruct(mae: MAE, imgs: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Masked input, reconstruction and original of ``imgs`` ``(B, 1, H, W)``, for figures.

    The predicted normalised pixels of a masked patch are mapped back with that patch's true
    mean and standard deviation (as the MAE paper's figures do); visible patches are copied.

    Returns:
        ``{"original", "masked", "reconstruction"}`` ``(B, H, W)`` (masked patches of
        ``masked`` are NaN) and ``"mask"`` ``(B, L)``.
    """
    was = mae.training
    mae.eval()
    try:
        _, pred, mask = mae(imgs, generator=generator)
    finally:
        mae.train(was)
    p = mae.patch
    _, mu, sd = normalised_patches(imgs, p)
    patches = patchify(imgs, p)
    m = mask[..., None].bool()
    recon = torch.where(m, pred * sd + mu, patches)
    masked = torch.where(m, torch.full_like(patches, float("nan")), patches)
    return {"original": imgs[:, 0], "masked": unpatchify(masked, p)[:, 0],
            "reconstruction": unpatchify(recon, p)[:, 0].clamp(0, 1), "mask": mask}
