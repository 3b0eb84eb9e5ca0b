"""Image operations on torch batches shared by the trainers (one definition of each)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, radius 2.5 sigma (at least 1)."""
    radius = max(1, int(round(2.5 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with replicated edges; differentiable, same shape."""
    k = gaussian_kernel(sigma, x.device).to(x.dtype)
    c = x.shape[1]
    pad = k.numel() // 2
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
