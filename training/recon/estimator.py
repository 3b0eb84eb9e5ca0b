"""The reconstruction network as an attribute estimator: aligned uint8 crops in, natural units out.

Used by ``surrogate attributes extract`` (with a torch checkpoint) and by the GAN evaluation as the
independent attribute estimator. Test-time mirroring: every crop is also run mirrored; the estimate is
the mean of the two (with yaw/roll un-mirrored) and their agreement is the per-image confidence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from surrogate.face_align import agreement_confidence, mirror_attributes, prepare_crops
from surrogate.schema import AttributeSchema
from training.recon.checkpoint import load_reconnet
from training.recon.networks import ReconNet


class AttributeEstimator:
    """``predict(images)`` -> (N, A) float32 natural units in ``schema`` order."""

    def __init__(self, net: ReconNet, schema: AttributeSchema, config: dict[str, Any], *,
                 device: str | torch.device = "cpu", batch_size: int = 256, mirror: bool = True):
        self.net = net.eval()
        self.schema = schema
        self.config = config
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.mirror = mirror
        self.image_size = int(net.image_size)
        self.channels = int(net.channels)

    @torch.no_grad()
    def _run(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        outputs: dict[str, list[np.ndarray]] = {"attributes": [], "identity": [], "lighting": []}
        for start in range(0, len(crops), self.batch_size):
            x = torch.from_numpy(crops[start:start + self.batch_size]).to(self.device).float() / 127.5 - 1.0
            result = self.net(x)
            for key in outputs:
                outputs[key].append(result[key].float().cpu().numpy())
        return {k: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for k, v in outputs.items()}

    def predict_full(self, images: np.ndarray | list[np.ndarray]) -> dict[str, np.ndarray]:
        """attributes (natural units), confidence, identity, lighting for aligned crops of any size."""
        crops = prepare_crops(images, self.image_size, self.channels)
        if len(crops) == 0:
            empty = np.zeros((0, len(self.schema)), np.float32)
            return {"attributes": empty, "confidence": np.zeros(0, np.float32),
                    "identity": np.zeros((0, self.net.n_identity), np.float32),
                    "lighting": np.zeros((0, 4), np.float32)}
        direct = self._run(crops)
        values = self.schema.denormalise(direct["attributes"])
        confidence = np.ones(len(crops), np.float32)
        if self.mirror:
            mirrored = self.schema.denormalise(self._run(np.ascontiguousarray(crops[..., ::-1]))["attributes"])
            confidence = agreement_confidence(self.schema, values, mirrored)
            values = (values + mirror_attributes(self.schema, mirrored)) / 2
        return {"attributes": self.schema.clip(values), "confidence": confidence,
                "identity": direct["identity"], "lighting": direct["lighting"]}

    def predict(self, images: np.ndarray | list[np.ndarray]) -> np.ndarray:
        return self.predict_full(images)["attributes"]

    def predict_with_confidence(self, images: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        full = self.predict_full(images)
        return full["attributes"], full["confidence"]


def load_estimator(path: str | Path, device: str | torch.device = "cpu", *, mirror: bool = True) -> AttributeEstimator:
    """Contract 5: an estimator from a training checkpoint (``last.pt``) or weights file (``model.pt``)."""
    net, schema, config = load_reconnet(path, device)
    return AttributeEstimator(net, schema, config, device=device, mirror=mirror)
