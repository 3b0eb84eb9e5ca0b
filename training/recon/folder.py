"""Folder mode: labelled face images (the portrait corpus, or a lab's own consented faces) as training data.

The images and the attribute file are read by the GAN trainer's loader (``training.gan.dataset``, any
adapter format, rows matched to images by the ``file`` column or the id), once, into device memory: a
20,000-face 64x64 grey corpus is 82 MB. A fixed share of the rows is held out by row id
(``split_by_row_id``), so a row keeps its side while the corpus grows.

Per step, on the device: random rows, a horizontal flip with the attributes mirrored
(``surrogate.face_align.mirror_attributes``: yaw and roll change sign), a small scale and shift of the
crop (labels unchanged: the framing of real crops is never exact), then the photometric and occlusion
augmentation every recon batch gets (``data.augment_batch``).

Real rows carry no face-model identity or lighting, so a folder batch has no ``identity`` or
``lighting`` targets and those heads are left out of the loss (``loop.compute_loss``), not fed zeros.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from surrogate.face_align import mirror_attributes
from training.gan.dataset import FaceDataset, load_face_dataset, split_by_row_id
from training.recon.config import ConfigError, ReconConfig


def attribute_file(config: ReconConfig) -> Path:
    """The folder's attribute file: ``data.attributes``, else ``attributes.csv`` inside ``data.path``."""
    return Path(config.data.attributes) if config.data.attributes else Path(config.data.path) / "attributes.csv"


def load_folder_split(config: ReconConfig) -> tuple[FaceDataset, FaceDataset]:
    """(training rows, held-out rows) of ``data.path``, images at the model's size and channels."""
    if not config.data.path:
        raise ConfigError("data.path: folder mode needs an image folder (data.path or --data DIR)")
    folder, attributes = Path(config.data.path), attribute_file(config)
    if not attributes.is_file():
        raise ConfigError(f"data.attributes: no attribute file at {attributes}")
    dataset = load_face_dataset(folder, attributes=attributes, fmt=config.data.format, schema=config.schema,
                                min_confidence=config.data.min_confidence, size=config.model.image_size,
                                channels=config.model.channels)
    train_idx, held_idx = split_by_row_id(dataset.names, config.data.held_out_fraction, config.train.seed)
    if len(train_idx) == 0:
        raise ConfigError(f"{folder}: no training rows left after holding out data.held_out_fraction "
                          f"{config.data.held_out_fraction} of {len(dataset)}")
    return dataset.subset(train_idx), dataset.subset(held_idx)


def jitter_crops(images: torch.Tensor, flip: torch.Tensor, scale_jitter: float, shift_jitter: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Flip the rows marked in ``flip`` horizontally and rescale / shift every crop a little.

    uint8 or float (N, C, S, S) -> float in pixel units (0..255); edges are replicated (a black border
    would be a cue no real crop has)."""
    n, device = images.shape[0], images.device
    rand = torch.rand(n, 3, generator=generator).to(device)
    scale = 1.0 + (rand[:, 0] * 2 - 1) * scale_jitter  # > 1: the face fills more of the crop
    shift = (rand[:, 1:] * 2 - 1) * shift_jitter * 2  # grid units: the image spans [-1, 1]
    sign = 1.0 - 2.0 * flip.to(device=device, dtype=torch.float32)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = sign / scale
    theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


class FolderSource:
    """Training batches drawn from a labelled folder held in device memory.

    ``chunks_consumed`` counts the batches drawn (the checkpoint's data-stream position, as for renders):
    a resumed run reseeds its draws from it.
    """

    def __init__(self, config: ReconConfig, train: FaceDataset, device: torch.device, chunks_consumed: int = 0):
        self.config = config
        self.device = device
        self.chunks_consumed = chunks_consumed
        schema = train.schema
        self.images = torch.from_numpy(np.ascontiguousarray(train.images)).to(device)
        mirrored = np.clip(schema.normalise(mirror_attributes(schema, train.values)), 0.0, 1.0).astype(np.float32)
        self.attributes = torch.from_numpy(train.normalised).to(device)
        self.mirrored = torch.from_numpy(mirrored).to(device)
        self._generator = torch.Generator(device="cpu").manual_seed(config.train.seed * 7919 + chunks_consumed)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def next_batch(self) -> dict[str, torch.Tensor]:
        n, batch = len(self), self.config.train.batch_size
        pick = torch.randint(n, (batch,), generator=self._generator)
        flip = torch.rand(batch, generator=self._generator) < self.config.data.flip_probability
        pick_d, flip_d = pick.to(self.device), flip.to(self.device)
        augment = self.config.augment
        images = jitter_crops(self.images[pick_d], flip_d, augment.scale_jitter, augment.shift_jitter,
                              self._generator)
        attributes = torch.where(flip_d[:, None], self.mirrored[pick_d], self.attributes[pick_d])
        self.chunks_consumed += 1
        return {"images": images, "attributes": attributes}
