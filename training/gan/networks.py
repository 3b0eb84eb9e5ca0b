"""Conditional BEGAN-CS networks (paper section 4, BEGAN reference architecture).

Generator G(z (+) y): Linear -> 8x8xn -> blocks of [conv3x3+ELU, conv3x3+ELU] with nearest x2
upsampling -> conv3x3 to C channels (no output activation: images in BEGAN scaling x/127.5 - 1).
Discriminator: an auto-encoder (encoder to a latent z_hat, decoder shaped like G without labels) plus a
2-layer auxiliary predictor z_hat -> y_hat in [0, 1]. The discriminator returns its encoder output so the
training loop can reuse it for the BEGAN-CS constraint loss instead of encoding the fakes twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from training.gan.config import ModelConfig
from training.imageops import gaussian_blur


def n_blocks(image_size: int) -> int:
    """BEGAN's repeat count: 8x8 base doubled (blocks - 1) times (4 blocks for 64x64)."""
    return int(math.log2(image_size)) - 2


class Decoder(nn.Module):
    """BEGAN decoder / generator body: vector -> image in BEGAN scaling."""

    def __init__(self, in_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.n, self.skip, self.blocks = cfg.n, cfg.skip, n_blocks(cfg.image_size)
        self.fc = nn.Linear(in_dim, 8 * 8 * cfg.n)
        self.stages = nn.ModuleList()
        for i in range(self.blocks):
            in_ch = cfg.n * 2 if (cfg.skip and i > 0) else cfg.n
            self.stages.append(
                nn.Sequential(
                    nn.Conv2d(in_ch, cfg.n, 3, padding=1),
                    nn.ELU(),
                    nn.Conv2d(cfg.n, cfg.n, 3, padding=1),
                    nn.ELU(),
                )
            )
        self.to_image = nn.Conv2d(cfg.n, cfg.channels, 3, padding=1)
        self.tanh = cfg.output_activation == "tanh"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h0 = self.fc(h).view(-1, self.n, 8, 8)
        x = h0
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
                if self.skip:
                    x = torch.cat([x, F.interpolate(h0, size=x.shape[-2:], mode="nearest")], dim=1)
            x = stage(x)
        image = self.to_image(x)
        return torch.tanh(image) if self.tanh else image


class Encoder(nn.Module):
    """BEGAN encoder: conv stacks with stride-2 downsampling, then Linear to the latent (no activation)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        blocks = n_blocks(cfg.image_size)
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, cfg.n, 3, padding=1), nn.ELU()]
        in_ch = cfg.n
        for i in range(blocks):
            ch = cfg.n * (i + 1)
            layers += [
                nn.Conv2d(in_ch, ch, 3, padding=1),
                nn.ELU(),
                nn.Conv2d(ch, ch, 3, padding=1),
                nn.ELU(),
            ]
            if i < blocks - 1:
                layers += [nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.ELU()]
            in_ch = ch
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(8 * 8 * in_ch, cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class Generator(nn.Module):
    """G(z, y): z (N, z_dim) ~ U(-1, 1), y (N, A) normalised to [0, 1] -> (N, C, H, W) BEGAN scaling."""

    def __init__(self, cfg: ModelConfig, n_attributes: int) -> None:
        super().__init__()
        self.cfg, self.n_attributes = cfg, n_attributes
        self.decoder = Decoder(cfg.z_dim + n_attributes, cfg)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, y.to(z.dtype)], dim=1))


@dataclass
class DiscriminatorOutput:
    reconstruction: torch.Tensor  # D(v), same shape as v
    latent: torch.Tensor  # Enc(v), (N, latent_dim): reused for L_C on fakes
    labels: torch.Tensor  # y_hat in [0, 1], (N, A)


class AuxiliaryPredictor(nn.Module):
    """The paper's 2-layer fully connected label predictor on the discriminator's latent."""

    def __init__(self, latent_dim: int, hidden: int, n_attributes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ELU(), nn.Linear(hidden, n_attributes))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(latent))


class Discriminator(nn.Module):
    """Auto-encoder discriminator with the conditional extension's auxiliary label predictor."""

    def __init__(self, cfg: ModelConfig, n_attributes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg.latent_dim, cfg)
        self.aux = AuxiliaryPredictor(cfg.latent_dim, cfg.aux_hidden, n_attributes)

    def forward(self, v: torch.Tensor) -> DiscriminatorOutput:
        latent = self.encoder(v)
        return DiscriminatorOutput(self.decoder(latent), latent, self.aux(latent))

    def read_labels(self, v: torch.Tensor, blur_sigma: float) -> torch.Tensor:
        """y_hat as the label losses read it: from ``v`` blurred by ``loss.label_blur`` (no blur: the
        encoder pass is the same as ``forward``'s, whose ``labels`` training reuses instead)."""
        return self.aux(self.encoder(gaussian_blur(v, blur_sigma) if blur_sigma > 0 else v))


def build_networks(cfg: ModelConfig, n_attributes: int) -> tuple[Generator, Discriminator]:
    return Generator(cfg, n_attributes), Discriminator(cfg, n_attributes)


def to_began(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in BEGAN scaling x/127.5 - 1."""
    return images_uint8.float() / 127.5 - 1.0


def from_began(images: torch.Tensor) -> torch.Tensor:
    """BEGAN scaling -> uint8 (N, C, H, W), clamped and rounded."""
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
