"""ReconNet: a small MobileNetV2-style CNN regressing face-model parameters from an aligned face crop.

Why this shape: the target is <= 2 ms per 64x64 image on a 2-core CPU through onnxruntime, so the trunk
uses inverted residual blocks (depthwise-separable convolutions) and no global average pooling at the
end: the last 4x4 feature map is flattened, because head pose is mostly *where* things are in the crop.

Contract (common.md, 5): ``forward(x (N, C, S, S) in [-1, 1]) -> {"attributes": (N, A) normalised to
[0, 1] in schema order, "identity": (N, n_identity), "lighting": (N, 4) azimuth, elevation, strength,
ambient in FaceParams units}``. In training mode the attributes are not clamped (the loss needs the
gradient outside [0, 1]); in eval mode (and so in exported ONNX) they are clamped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

LIGHTING_NAMES: tuple[str, ...] = ("light_azimuth", "light_elevation", "light_strength", "ambient")


def _channels(base: int, width: float) -> int:
    """Scale a channel count and round to a multiple of 8 (vectorises well on CPU)."""
    return max(8, int(base * width + 4) // 8 * 8)


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hidden, 1))
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden), ConvBNAct(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.residual else out


# (expansion, output channels at width 1, blocks, stride of the first block)
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (4, 24, 2, 2),
    (4, 40, 3, 2),
    (4, 80, 3, 2),
    (4, 128, 2, 1),
)


class ReconNet(nn.Module):
    def __init__(
        self,
        n_attributes: int,
        n_identity: int,
        *,
        image_size: int = 64,
        channels: int = 1,
        width: float = 1.0,
        head_features: int = 256,
        dropout: float = 0.1,
        lighting_low: Sequence[float] = (-70.0, -15.0, 0.25, 0.15),
        lighting_high: Sequence[float] = (70.0, 60.0, 1.0, 0.65),
    ):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {image_size}")
        self.n_attributes = n_attributes
        self.n_identity = n_identity
        self.image_size = image_size
        self.channels = channels
        stem = _channels(24, width)
        layers: list[nn.Module] = [ConvBNAct(channels, stem, 3, 2)]
        cin = stem
        for expand, base, blocks, stride in STAGES:
            cout = _channels(base, width)
            for i in range(blocks):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        final = _channels(64, width)
        layers.append(ConvBNAct(cin, final, 1))
        self.trunk = nn.Sequential(*layers)
        spatial = image_size // 16
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(final * spatial * spatial, head_features),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.out_attributes = nn.Linear(head_features, n_attributes)
        self.out_identity = nn.Linear(head_features, n_identity)
        self.out_lighting = nn.Linear(head_features, len(LIGHTING_NAMES))
        self.register_buffer("lighting_low", torch.tensor(list(lighting_low), dtype=torch.float32))
        self.register_buffer("lighting_high", torch.tensor(list(lighting_high), dtype=torch.float32))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        # Start every normalised output at the middle of its range.
        nn.init.constant_(self.out_attributes.bias, 0.5)
        nn.init.constant_(self.out_lighting.bias, 0.5)

    def forward_normalised(self, x: Tensor) -> dict[str, Tensor]:
        """Raw heads: attributes and lighting normalised to [0, 1] (unclamped), identity as is."""
        features = self.head(self.trunk(x))
        return {
            "attributes": self.out_attributes(features),
            "identity": self.out_identity(features),
            "lighting": self.out_lighting(features),
        }

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        raw = self.forward_normalised(x)
        attributes, lighting = raw["attributes"], raw["lighting"]
        if not self.training:
            attributes = attributes.clamp(0.0, 1.0)
            lighting = lighting.clamp(0.0, 1.0)
        lighting = self.lighting_low + lighting * (self.lighting_high - self.lighting_low)
        return {"attributes": attributes, "identity": raw["identity"], "lighting": lighting}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
