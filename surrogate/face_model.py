"""A parametric 3-D head built in our own numpy code: identity, gender, FACS action units, pose.

The mesh is written from scratch here (no third-party mesh, nothing downloaded; Apache-2.0 like the
rest of the project), see docs/face_model.md. It is a linear blend-shape model, as in a 3-D morphable
model::

    vertices = mean + sum_k identity_k * B_k + (gender - 0.5) * 2 * G + sum_au (intensity_au / 5) * E_au

* ``mean``: a lofted head (superelliptic cross-sections over a profile curve), with a nose, brow
  ridge, eye sockets, cheekbones, lips, chin, ears and a hair volume added as smooth displacement fields.
* ``B_k`` (``N_IDENTITY`` modes, standard-normal coefficients): head width, face length, jaw width,
  chin, nose length/width/protrusion, eye spacing/height, brow height, mouth width, lip fullness,
  cheekbones, forehead, face depth, lower-face fullness. All modes are left-right symmetric.
* ``G``: the gender axis (jaw, brow ridge, nose size, chin, hair length, lip fullness, brow thickness).
* ``E_au``: one displacement field per FACS action unit at full intensity (5), following FACS
  descriptions (AU04 lowers and draws the brows together, AU12 pulls the lip corners up and back, ...).
  Eyelid aperture, lip-red thickness, the mouth opening and wrinkles (furrows, nasolabial fold, crow's
  feet) are too fine for mesh vertices at 64 px, so they are part of the procedural texture driven by
  the same intensities (``texture_parameters``).

Surface colour (albedo) is a procedural texture evaluated per pixel at the *canonical* (neutral,
mean-identity) coordinates of the surface point, so it follows every deformation.

Coordinates: head units (crown at y = +1, under-chin at y = -1), x to the image's right, y up, z towards
the camera. Pose follows ``surrogate.schema`` (degrees, OpenFace camera frame): yaw > 0 turns the nose to
the image's LEFT, pitch > 0 tilts the head down, roll > 0 tilts the top of the head to the image's RIGHT.
Rotation is R = R_pitch @ R_yaw @ R_roll (OpenFace's XYZ Euler order) about ``POSE_PIVOT`` so that the
face stays centred like a landmark-aligned crop.

Framing (orthographic camera, the default ``scale`` 1 and no shift): the eye centres sit at
``EYE_ROW`` (42 %) of the image height, the mouth at ``MOUTH_ROW`` (72 %), the inter-pupil distance is
about 29 % of the width; the crown is cropped, the chin sits at about 92 % of the height, like the
aligned 64 x 64 CelebA crops used to train BEGAN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from surrogate.schema import AttributeSchema

SUPPORTED_AUS: tuple[str, ...] = (
    "AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12",
    "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45",
)
"""Every action unit OpenFace 2.x estimates an intensity for; each has its own deformation."""

IDENTITY_MODES: tuple[str, ...] = (
    "head_width", "face_length", "jaw_width", "chin_protrusion", "nose_length", "nose_width",
    "nose_protrusion", "eye_spacing", "eye_height", "brow_height", "mouth_width", "lip_fullness",
    "cheekbones", "forehead_height", "face_depth", "lower_face_fullness",
)
N_IDENTITY: int = len(IDENTITY_MODES)

# Framing of the aligned crop (fractions of the image size).
EYE_ROW = 0.42
MOUTH_ROW = 0.72
# Canonical landmark heights (head units) that define the framing.
EYE_Y = 0.02
MOUTH_Y = -0.585
EYE_X = 0.30
POSE_PIVOT = np.array([0.0, -0.28, 0.6], dtype=np.float32)
PIXELS_PER_UNIT = (MOUTH_ROW - EYE_ROW) / (EYE_Y - MOUTH_Y)  # fraction of the image per head unit

# Number of per-face texture parameters (see ``texture_parameters``).
TEXTURE_FIELDS: tuple[str, ...] = (
    "skin", "gender", "hair", "eye_upper", "eye_lower", "lip_scale", "mouth_gap", "furrow",
    "forehead_lines", "crows_feet", "nasolabial", "nose_wrinkle", "chin_wrinkle", "teeth",
    "lower_lid_shape", "lid_fold", "lip_corner", "mouth_width", "lip_press",
)


@dataclass(frozen=True)
class FaceParams:
    """Everything that determines one rendered face. Angles in degrees (schema convention)."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    aus: Mapping[str, float] = field(default_factory=dict)  # AU name -> intensity 0..5
    gender: float = 0.5  # 0 female .. 1 male (shape + albedo axis)
    identity: np.ndarray | None = None  # (N_IDENTITY,) ~ N(0, 1); None = mean shape
    skin: float = 0.5  # albedo / skin tone 0 (dark) .. 1 (light)
    light_azimuth: float = 0.0  # degrees; 0 = from the camera, > 0 from the image's right
    light_elevation: float = 20.0  # degrees; > 0 from above
    light_strength: float = 0.7  # Lambertian weight
    ambient: float = 0.35
    scale: float = 1.0  # face size relative to the default framing
    shift_x: float = 0.0  # translation, fraction of image size (> 0 to the right)
    shift_y: float = 0.0  # translation, fraction of image size (> 0 down)
    hair: float = 0.2  # hair colour 0 (black) .. 1 (blond); an addition to the shared contract

    def __post_init__(self) -> None:
        unknown = sorted(set(self.aus) - set(SUPPORTED_AUS))
        if unknown:
            raise ValueError(f"unsupported action unit(s) {unknown}; supported: {', '.join(SUPPORTED_AUS)}")
        for name, value in self.aus.items():
            if not math.isfinite(float(value)) or not 0.0 <= float(value) <= 5.0:
                raise ValueError(f"action unit {name} intensity must be in [0, 5], got {value!r}")
        for name in ("yaw", "pitch", "roll", "gender", "skin", "light_azimuth", "light_elevation",
                     "light_strength", "ambient", "scale", "shift_x", "shift_y", "hair"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"FaceParams.{name} must be finite, got {getattr(self, name)!r}")
        if not 0.0 <= self.gender <= 1.0:
            raise ValueError(f"FaceParams.gender must be in [0, 1], got {self.gender}")
        if self.scale <= 0:
            raise ValueError(f"FaceParams.scale must be positive, got {self.scale}")
        if self.identity is not None:
            ident = np.asarray(self.identity, dtype=np.float32)
            if ident.shape != (N_IDENTITY,):
                raise ValueError(f"FaceParams.identity must have shape ({N_IDENTITY},), got {ident.shape}")
            if not np.all(np.isfinite(ident)):
                raise ValueError("FaceParams.identity contains NaN or infinite values")
            object.__setattr__(self, "identity", ident)

    def au(self, name: str) -> float:
        return float(self.aus.get(name, 0.0))


def params_from_attributes(
    schema: AttributeSchema, row: np.ndarray, *, identity: np.ndarray | None = None, **scene: Any
) -> FaceParams:
    """FaceParams for one attribute row in natural units (schema order); ``scene`` sets the rest.

    Pose names and ``gender`` map to the fields of the same name, AU columns to ``aus``. Values are
    clipped to the schema's valid range (estimators overshoot slightly); a schema attribute the face
    model cannot show raises ValueError rather than being silently ignored.
    """
    row = np.asarray(row, dtype=np.float64).reshape(-1)
    if row.shape[0] != len(schema):
        raise ValueError(f"attribute row has {row.shape[0]} values, schema {list(schema.names)} needs {len(schema)}")
    fields: dict[str, Any] = {}
    aus: dict[str, float] = {}
    for spec, value in zip(schema.attributes, row, strict=True):
        if not math.isfinite(value):
            raise ValueError(f"attribute {spec.name} is not finite: {value}")
        value = float(np.clip(value, spec.low, spec.high))
        if spec.name in ("yaw", "pitch", "roll", "gender"):
            fields[spec.name] = value
        elif spec.name in SUPPORTED_AUS:
            aus[spec.name] = value
        else:
            raise ValueError(f"the 3-D face model cannot render attribute {spec.name!r}")
    fields.update(scene)
    return FaceParams(aus=aus, identity=identity, **fields)


# ---------------------------------------------------------------------------------------------
# Mesh construction helpers (all operate on the canonical coordinates of the base surface)
# ---------------------------------------------------------------------------------------------

def _gauss(d: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * (d / sigma) ** 2)


def _blob(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _pair(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """A symmetric pair of blobs at (+-cx, cy)."""
    return _blob(np.abs(x), y, cx, cy, sx, sy)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _loft_angles() -> tuple[np.ndarray, np.ndarray]:
    """Sampling angles: dense over the face (front, brow-to-chin), sparse at the back and crown."""
    m = 30
    t = np.linspace(-1.0, 1.0, 2 * m + 1)
    a = 0.27
    theta = np.pi * np.sign(t) * (a * np.abs(t) + (1 - a) * np.abs(t) ** 3)
    phi = np.concatenate([
        np.linspace(0.0, 0.85, 6, endpoint=False),
        np.linspace(0.85, 2.9, 46, endpoint=False),
        np.linspace(2.9, np.pi, 4),
    ])
    return theta, phi


def _grid_triangles(rows: int, cols: int, theta: np.ndarray, offset: int = 0) -> np.ndarray:
    """Two triangles per quad; the diagonal is mirrored across theta = 0 so the mesh is symmetric."""
    tris = []
    for i in range(rows - 1):
        for j in range(cols - 1):
            a = offset + i * cols + j
            b, c, d = a + 1, a + cols, a + cols + 1
            if theta[j] + theta[j + 1] >= 0:  # right half (x > 0)
                tris += [(a, c, b), (b, c, d)]
            else:  # left half: mirror image of the right half's split
                tris += [(a, c, d), (a, d, b)]
    return np.asarray(tris, dtype=np.int32)


def _grid_difference(grid: np.ndarray, axis: int) -> np.ndarray:
    """Central differences along a grid axis (one-sided at the ends); the scale does not matter."""
    out = np.empty_like(grid)
    src = np.moveaxis(grid, axis, 0)
    dst = np.moveaxis(out, axis, 0)
    dst[1:-1] = src[2:] - src[:-2]
    dst[0] = src[1] - src[0]
    dst[-1] = src[-1] - src[-2]
    return out


@dataclass(frozen=True)
class FaceModel:
    """The mesh and its linear bases. Build once with ``face_model()``; treat as read-only."""

    mean: np.ndarray  # (V, 3) float32, neutral mean face
    canonical: np.ndarray  # (V, 3) float32, texture coordinates (= mean face, neck marked y < -1.05)
    triangles: np.ndarray  # (T, 3) int32, counter-clockwise seen from outside
    identity_basis: np.ndarray  # (N_IDENTITY, V, 3)
    gender_axis: np.ndarray  # (V, 3): male minus mean (gender 1), female = -this (gender 0)
    au_basis: dict[str, np.ndarray]  # AU -> (V, 3) displacement at intensity 5
    # (first vertex, rows, columns, rows end in poles, sign of cross(d_row, d_col) that points outwards)
    grids: tuple[tuple[int, int, int, bool, float], ...]

    @property
    def n_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def basis_matrix(self) -> np.ndarray:
        """(N_IDENTITY + 1 + len(SUPPORTED_AUS), V*3): identity, gender, AUs per unit intensity."""
        return _basis_matrix(self)

    def vertex_normals(self, vertices: np.ndarray) -> np.ndarray:
        """Unit outward normals (B, V, 3) of deformed vertices, from differences along the mesh grids.

        Every part of the mesh is a (rows x columns) grid, so normals are two slices and a cross
        product instead of a scatter over triangles: this is a large part of the render speed.
        """
        normals = np.empty_like(vertices)
        for first, rows, cols, poles, sign in self.grids:
            grid = vertices[:, first:first + rows * cols].reshape(-1, rows, cols, 3)
            a = _grid_difference(grid, axis=1)
            b = _grid_difference(grid, axis=2)
            n = np.empty_like(grid)
            n[..., 0] = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
            n[..., 1] = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
            n[..., 2] = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
            if sign < 0:
                n *= -1.0
            if poles:  # the first and last rows collapse to points: borrow their neighbours' normals
                n[:, 0], n[:, -1] = n[:, 1], n[:, -2]
            normals[:, first:first + rows * cols] = n.reshape(-1, rows * cols, 3)
        length = np.sqrt(np.einsum("bvc,bvc->bv", normals, normals))
        normals /= np.maximum(length, 1e-12)[..., None]
        return normals

    def coefficients(self, params: FaceParams) -> np.ndarray:
        """Blend-shape weights of one face, matching the rows of ``basis_matrix``."""
        ident = np.zeros(N_IDENTITY, np.float32) if params.identity is None else params.identity
        aus = np.array([params.au(a) for a in SUPPORTED_AUS], np.float32)
        return np.concatenate([ident, [2.0 * (params.gender - 0.5)], aus]).astype(np.float32)

    def vertices(self, params_list: list[FaceParams]) -> np.ndarray:
        """(B, V, 3) deformed (unposed) vertices."""
        coeffs = np.stack([self.coefficients(p) for p in params_list])
        out = coeffs @ self.basis_matrix
        return out.reshape(len(params_list), -1, 3) + self.mean


_BASIS: dict[int, np.ndarray] = {}


def _basis_matrix(model: FaceModel) -> np.ndarray:
    key = id(model)
    if key not in _BASIS:
        rows = [model.identity_basis.reshape(N_IDENTITY, -1), model.gender_axis.reshape(1, -1)]
        rows.append(np.stack([model.au_basis[a].reshape(-1) / 5.0 for a in SUPPORTED_AUS]))
        _BASIS[key] = np.concatenate(rows).astype(np.float32)
    return _BASIS[key]


def _smooth_profile(y: np.ndarray, knots: list[float], values: list[float]) -> np.ndarray:
    """Piecewise-linear profile through the knots, Gaussian-smoothed so shading shows no creases."""
    fine = np.linspace(-1.2, 1.2, 2401)
    curve = np.interp(fine, knots, values)
    kernel = np.exp(-0.5 * (np.arange(-150, 151) / 50.0) ** 2)
    padded = np.pad(curve, 150, mode="edge")
    smooth = np.convolve(padded, kernel / kernel.sum(), mode="valid")
    return np.interp(y, fine, smooth)


def _head_surface(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """The lofted base head: superelliptic horizontal sections over profile curves, (rows*cols, 3)."""
    th, ph = np.meshgrid(theta, phi)
    y = np.cos(ph)
    s = np.sin(ph)
    # Half-width / front depth / back depth as functions of height (divided by sin(phi) for a round cap).
    ys = [-1.0, -0.95, -0.85, -0.7, -0.45, -0.2, 0.1, 0.4, 0.7, 1.0]
    width = _smooth_profile(y, ys, [0.62, 0.64, 0.68, 0.70, 0.71, 0.70, 0.70, 0.74, 0.70, 0.64])
    front = _smooth_profile(y, ys, [1.9, 1.75, 1.35, 1.12, 0.95, 0.88, 0.86, 0.92, 0.92, 0.85])
    back = _smooth_profile(y, ys, [0.55, 0.55, 0.6, 0.68, 0.8, 0.9, 0.95, 0.97, 0.95, 0.9])
    sin_t, cos_t = np.sin(th), np.cos(th)
    p = 2.5
    x = s * width * np.sign(sin_t) * np.abs(sin_t) ** (2 / p)
    depth = np.where(cos_t >= 0, front, back)
    z = s * depth * np.sign(cos_t) * np.abs(cos_t) ** (2 / p)
    # Forehead flattening towards the crown keeps the face plane from bulging like a ball.
    return np.stack([x, y, z], axis=-1).reshape(-1, 3)


def _face_features(p: np.ndarray) -> np.ndarray:
    """Displacements that turn the lofted head into a face (nose, eyes, brows, lips, chin, ears)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    front = _smoothstep(0.15, 0.55, z)
    dz = np.zeros_like(x)
    # Nose: a ridge that grows from the bridge to the tip, widening downwards, ending under the tip.
    t = np.clip((0.06 - y) / 0.39, 0.0, 1.0)  # 0 at the bridge, 1 at the tip (y = -0.33)
    height = 0.035 + 0.2 * t ** 1.4
    sigma = 0.045 + 0.045 * t
    envelope = _smoothstep(-0.43, -0.34, y) * (1 - _smoothstep(0.04, 0.16, y))
    dz += height * _gauss(x, sigma) * envelope
    dz += 0.035 * _blob(x, y, 0.0, -0.30, 0.055, 0.05)  # tip
    dz += 0.07 * _pair(x, y, 0.085, -0.335, 0.04, 0.035) * _smoothstep(-0.43, -0.36, y)  # alae
    # Eye sockets and eyeballs, brow ridge, cheekbones.
    dz -= 0.075 * _pair(x, y, EYE_X, EYE_Y + 0.02, 0.13, 0.085)
    dz += 0.035 * _pair(x, y, EYE_X, EYE_Y, 0.085, 0.045)
    dz += 0.035 * _gauss(y - 0.16, 0.05) * (1 - _smoothstep(0.38, 0.55, ax))
    dz += 0.03 * _pair(x, y, 0.42, -0.2, 0.1, 0.08)
    # Mouth: upper and lower lips, philtrum groove, mentolabial sulcus, chin.
    lips = 1 - _smoothstep(0.15, 0.26, ax)
    dz += 0.035 * _gauss(y + 0.55, 0.028) * lips
    dz += 0.04 * _gauss(y + 0.625, 0.03) * lips
    dz -= 0.012 * _blob(x, y, 0.0, -0.46, 0.025, 0.04)
    dz += 0.03 * _gauss(y + 0.5, 0.12) * (1 - _smoothstep(0.2, 0.45, ax))  # muzzle
    dz -= 0.02 * _gauss(y + 0.73, 0.03) * (1 - _smoothstep(0.12, 0.25, ax))
    dz += 0.05 * _blob(x, y, 0.0, -0.86, 0.14, 0.07)
    out = np.zeros_like(p)
    out[:, 2] = dz * front
    # Ears: flaps pushed out sideways at eye-to-nose height, at the sides of the head.
    side = _smoothstep(0.55, 0.68, ax)
    ear = 0.1 * _gauss(y + 0.14, 0.14) * _gauss(z + 0.08, 0.12) * side
    out[:, 0] = np.sign(x) * ear
    return out


def hairline_height(p: np.ndarray, gender: float | np.ndarray) -> np.ndarray:
    """Height of the hairline around the head; hair covers canonical points above it."""
    x, z = p[..., 0], p[..., 2]
    angle = np.arctan2(np.abs(x), z)  # 0 front, pi/2 side, pi back
    knots = [0.0, 0.6, 1.0, 1.3, 1.6, 2.2, np.pi]
    male = np.interp(angle, knots, [0.56, 0.5, 0.3, 0.0, -0.2, -0.45, -0.55])
    female = np.interp(angle, knots, [0.54, 0.42, 0.1, -0.7, -1.0, -1.0, -1.0])
    return female + (male - female) * gender


def _hair_volume(p: np.ndarray, gender: float) -> np.ndarray:
    """Outward displacement giving hair thickness (more for long hair)."""
    line = hairline_height(p, gender)
    cover = _smoothstep(0.0, 0.12, p[:, 1] - line)
    direction = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-6)
    thickness = 0.05 + 0.05 * (1 - gender)
    side = _smoothstep(0.2, 0.6, np.abs(p[:, 0]) - 0.6 * p[:, 2])  # long hair mostly at the sides
    extra = (1 - gender) * 0.06 * side * _smoothstep(-0.9, -0.3, -p[:, 1])
    return direction * (cover * (thickness + extra))[:, None]


def _identity_modes(p: np.ndarray) -> np.ndarray:
    """One smooth, left-right symmetric displacement field per identity mode (about 1 std each)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    sx = np.sign(x)
    front = _smoothstep(0.15, 0.55, z)
    lower = _smoothstep(-0.1, -0.6, y)
    modes = np.zeros((N_IDENTITY, *p.shape), dtype=np.float64)
    m = {name: i for i, name in enumerate(IDENTITY_MODES)}
    modes[m["head_width"], :, 0] = 0.05 * x
    modes[m["face_length"], :, 1] = 0.05 * np.minimum(y - 0.0, 0.0) * _smoothstep(-1.1, -0.9, y)
    modes[m["jaw_width"], :, 0] = 0.06 * x * lower
    modes[m["chin_protrusion"], :, 2] = 0.04 * _blob(x, y, 0.0, -0.85, 0.2, 0.12)
    nose = _blob(x, y, 0.0, -0.18, 0.14, 0.2) * front
    modes[m["nose_length"], :, 1] = -0.03 * nose * _smoothstep(0.05, -0.35, y)
    modes[m["nose_width"], :, 0] = 0.02 * sx * _blob(ax, y, 0.08, -0.3, 0.06, 0.08) * front
    modes[m["nose_protrusion"], :, 2] = 0.035 * _blob(x, y, 0.0, -0.26, 0.06, 0.12) * front
    modes[m["eye_spacing"], :, 0] = 0.02 * sx * _pair(x, y, EYE_X, EYE_Y, 0.12, 0.09) * front
    modes[m["eye_height"], :, 1] = 0.02 * _pair(x, y, EYE_X, EYE_Y, 0.14, 0.1) * front
    modes[m["brow_height"], :, 1] = 0.02 * _pair(x, y, EYE_X, 0.2, 0.18, 0.06) * front
    mouth = _blob(x, y, 0.0, MOUTH_Y, 0.3, 0.1) * front
    modes[m["mouth_width"], :, 0] = 0.1 * x * mouth
    lips = (1 - _smoothstep(0.12, 0.25, ax)) * front
    modes[m["lip_fullness"], :, 2] = 0.015 * (_gauss(y + 0.55, 0.03) + _gauss(y + 0.625, 0.035)) * lips
    modes[m["lip_fullness"], :, 1] = 0.01 * (_gauss(y + 0.53, 0.03) - _gauss(y + 0.64, 0.03)) * lips
    modes[m["cheekbones"], :, 2] = 0.03 * _pair(x, y, 0.42, -0.2, 0.1, 0.08) * front
    modes[m["cheekbones"], :, 0] = 0.025 * sx * _pair(x, y, 0.6, -0.1, 0.12, 0.15)
    modes[m["forehead_height"], :, 1] = 0.04 * _smoothstep(0.2, 0.6, y) * front
    modes[m["face_depth"], :, 2] = 0.05 * front * (1 - _smoothstep(0.5, 0.9, y))
    modes[m["lower_face_fullness"], :, 0] = 0.04 * sx * _pair(x, y, 0.5, -0.55, 0.15, 0.18)
    return modes.astype(np.float32)


def _gender_axis(p: np.ndarray) -> np.ndarray:
    """Male-minus-mean displacement (a male is gender = 1): squarer jaw, brow ridge, larger nose."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    front = _smoothstep(0.15, 0.55, z)
    out = np.zeros_like(p)
    out[:, 0] += 0.07 * x * _smoothstep(-0.3, -0.8, y)  # wider jaw
    out[:, 1] += -0.025 * _smoothstep(-0.5, -0.95, y)  # longer chin
    out[:, 2] += 0.025 * _gauss(y - 0.15, 0.05) * (1 - _smoothstep(0.3, 0.5, ax)) * front  # brow ridge
    out[:, 2] += 0.03 * _blob(x, y, 0.0, -0.22, 0.06, 0.14) * front  # nose
    out[:, 0] += 0.012 * np.sign(x) * _blob(ax, y, 0.085, -0.33, 0.05, 0.05) * front
    out[:, 2] += 0.02 * _blob(x, y, 0.0, -0.88, 0.2, 0.08) * front  # chin
    out[:, 2] -= 0.012 * (_gauss(y + 0.55, 0.03) + _gauss(y + 0.625, 0.035)) * (1 - _smoothstep(0.12, 0.25, ax))
    # Hair: shorter for men (the hair shell difference between the genders).
    out += 0.5 * (_hair_volume(p, 1.0) - _hair_volume(p, 0.0))
    return out.astype(np.float32)


def _action_units(p: np.ndarray) -> dict[str, np.ndarray]:
    """Displacement of each AU at intensity 5, following the FACS description of the movement."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    sx = np.sign(x)
    front = _smoothstep(0.15, 0.55, z)

    def field_(dx: Any = 0.0, dy: Any = 0.0, dz: Any = 0.0) -> np.ndarray:
        out = np.zeros_like(p)
        out[:, 0] = dx * front
        out[:, 1] = dy * front
        out[:, 2] = dz * front
        return out

    brow = _gauss(y - 0.19, 0.07) * (1 - _smoothstep(0.5, 0.62, ax))
    inner_brow = brow * _gauss(ax - 0.12, 0.12)
    outer_brow = brow * _gauss(ax - 0.42, 0.12)
    upper_lid = _pair(x, y, EYE_X, EYE_Y + 0.055, 0.11, 0.04)
    lower_lid = _pair(x, y, EYE_X, EYE_Y - 0.05, 0.11, 0.035)
    cheek = _pair(x, y, 0.33, -0.22, 0.12, 0.1)
    lower_cheek = _pair(x, y, 0.33, -0.34, 0.12, 0.08)  # lifted by AU12 without reaching the eyes
    corner = _pair(x, y, 0.21, MOUTH_Y, 0.08, 0.07)
    lips = (1 - _smoothstep(0.15, 0.3, ax))
    upper_lip = _gauss(y + 0.545, 0.045) * lips
    lower_lip = _gauss(y + 0.63, 0.045) * lips
    jaw = _smoothstep(-0.57, -0.64, y) * (1 - _smoothstep(0.3, 0.6, ax))
    chin = _blob(x, y, 0.0, -0.82, 0.16, 0.1)
    return {
        # Inner brow raiser: the inner ends of the brows go up (the forehead skin with them).
        "AU01": field_(dy=0.07 * inner_brow + 0.02 * _gauss(y - 0.35, 0.12) * _gauss(x, 0.18)),
        # Outer brow raiser: the lateral brows go up.
        "AU02": field_(dy=0.07 * outer_brow),
        # Brow lowerer: brows down and drawn together, a bulge between them.
        "AU04": field_(dx=-0.08 * sx * brow * _gauss(ax - 0.2, 0.2), dy=-0.12 * brow,
                       dz=0.035 * _blob(x, y, 0.0, 0.16, 0.08, 0.05) - 0.02 * outer_brow),
        # Upper lid raiser: the upper lid skin lifts (aperture in the texture).
        "AU05": field_(dy=0.07 * upper_lid, dz=-0.015 * upper_lid),
        # Cheek raiser: the cheeks lift and bulge, pushing the lower lid up (crow's feet in the texture).
        "AU06": field_(dy=0.12 * cheek + 0.04 * lower_lid, dz=0.075 * cheek + 0.015 * lower_lid),
        # Lid tightener: the lower lid rises and straightens.
        "AU07": field_(dy=0.045 * lower_lid - 0.02 * upper_lid, dz=0.06 * lower_lid),
        # Nose wrinkler: nose sides and upper lip pulled up, brows' inner ends pulled down.
        "AU09": field_(dy=0.045 * _blob(x, y, 0.0, -0.15, 0.12, 0.15) + 0.02 * upper_lip
                       - 0.025 * inner_brow),
        # Upper lip raiser: the upper lip rises, deepening the nasolabial furrow.
        "AU10": field_(dy=0.045 * upper_lip * _smoothstep(-0.6, -0.52, y), dz=0.01 * upper_lip),
        # Lip corner puller: the corners go up, out and back; the lower cheeks lift a little.
        "AU12": field_(dx=0.07 * sx * corner, dy=0.14 * corner + 0.05 * lower_cheek,
                       dz=-0.05 * corner + 0.035 * lower_cheek),
        # Dimpler: the corners tighten inwards and back.
        "AU14": field_(dx=-0.02 * sx * corner, dz=-0.03 * corner),
        # Lip corner depressor: the corners are pulled down.
        "AU15": field_(dy=-0.06 * corner, dx=0.01 * sx * corner),
        # Chin raiser: the chin boss and the lower lip are pushed up.
        "AU17": field_(dy=0.04 * chin + 0.025 * lower_lip, dz=0.02 * chin + 0.015 * lower_lip),
        # Lip stretcher: the corners are pulled sideways.
        "AU20": field_(dx=0.05 * sx * corner, dy=-0.01 * corner),
        # Lip tightener: the lips narrow and press together (red thickness in the texture), the skin
        # under the lower lip bulges.
        "AU23": field_(dx=-0.07 * sx * corner, dy=-0.015 * upper_lip + 0.015 * lower_lip,
                       dz=0.015 * (upper_lip + lower_lip) + 0.045 * _blob(x, y, 0.0, -0.7, 0.13, 0.04)),
        # Lips part: the lower lip drops slightly (the opening is in the texture).
        "AU25": field_(dy=-0.02 * lower_lip),
        # Jaw drop: everything below the mouth line moves down.
        "AU26": field_(dy=-0.11 * jaw, dz=-0.02 * jaw),
        # Blink: the upper lid comes down (aperture in the texture).
        "AU45": field_(dy=-0.02 * upper_lid),
    }


def _hair_curtain(gender: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long hair hanging behind the head and neck: full length for gender 0, tucked inside for 1.

    Returns the (rows, cols, 3) grid and its column angles (centred on the back of the head).
    """
    angle = np.linspace(np.radians(72), np.radians(288), 23)
    t = np.linspace(0.0, 1.0, 14)
    length = 1.55 - 1.05 * gender
    radius = (0.8 - 0.55 * gender) + 0.1 * t * (1 - gender)
    a, tt = np.meshgrid(angle, t)
    r = np.broadcast_to(radius[:, None], a.shape)
    grid = np.stack([r * np.sin(a), 0.1 - tt * length - 0.2 * gender, r * np.cos(a) - 0.12], axis=-1)
    return grid, angle, np.pi - angle


@lru_cache(maxsize=1)
def face_model() -> FaceModel:
    """Build the (cached) face model; about 0.05 s."""
    theta, phi = _loft_angles()
    base = _head_surface(theta, phi)
    canonical_head = base + _face_features(base)
    n_head = len(canonical_head)
    head_tris = _orient_outwards(canonical_head, _grid_triangles(len(phi), len(theta), theta), (0.0, -0.1, 0.0))

    # Neck: an open cylinder from inside the head down past the bottom of the crop.
    n_theta = np.linspace(-np.pi, np.pi, 33)
    n_y = np.linspace(-0.35, -2.2, 12)
    nt, ny = np.meshgrid(n_theta, n_y)
    neck = np.stack([0.42 * np.sin(nt), ny, 0.4 * np.cos(nt) - 0.2], axis=-1).reshape(-1, 3)
    neck_tris = _orient_outwards(neck, _grid_triangles(len(n_y), len(n_theta), n_theta), None) + n_head
    # Texture coordinates: neck points get y shifted below -1.05 so no facial feature is painted there.
    neck_canon = neck.copy()
    neck_canon[:, 1] = -1.1 + 0.5 * (neck[:, 1] + 0.35) / 1.85

    # Long hair: a curtain grid stored twice (outer and inner side) so it shows from both sides.
    curtain_mid, _, side = _hair_curtain(0.5)
    rows, cols = curtain_mid.shape[:2]
    curtain_mid = curtain_mid.reshape(-1, 3)
    curtain_male = _hair_curtain(1.0)[0].reshape(-1, 3)
    outer = _orient_outwards(curtain_mid, _grid_triangles(rows, cols, side), None)
    inner = outer[:, [0, 2, 1]]
    n_curtain = len(curtain_mid)
    curtain_canon = curtain_mid.copy()
    curtain_canon[:, 1] = 2.0  # above every hairline: painted as hair
    curtain_canon[:, 2] = -1.0  # behind the face: no facial feature

    first_outer = n_head + len(neck)
    first_inner = first_outer + n_curtain
    mean = np.concatenate([canonical_head + _hair_volume(canonical_head, 0.5), neck, curtain_mid, curtain_mid])
    canonical = np.concatenate([canonical_head, neck_canon, curtain_canon, curtain_canon])
    triangles = np.concatenate([head_tris, neck_tris, outer + first_outer, inner + first_inner])

    n_rest = len(mean) - n_head
    pad = np.zeros((n_rest, 3), np.float32)
    identity_basis = np.concatenate([_identity_modes(canonical_head), np.zeros((N_IDENTITY, n_rest, 3))], axis=1)
    curtain_gender = curtain_male - curtain_mid
    gender_axis = np.concatenate([_gender_axis(canonical_head), np.zeros((len(neck), 3)), curtain_gender,
                                  curtain_gender])
    au_basis = {k: np.concatenate([v, pad]).astype(np.float32) for k, v in _action_units(canonical_head).items()}
    return FaceModel(
        mean=mean.astype(np.float32),
        canonical=canonical.astype(np.float32),
        triangles=triangles.astype(np.int32),
        identity_basis=identity_basis.astype(np.float32),
        gender_axis=gender_axis.astype(np.float32),
        au_basis=au_basis,
        grids=(
            (0, len(phi), len(theta), True, 1.0),
            (n_head, len(n_y), len(n_theta), False, 1.0),
            (first_outer, rows, cols, False, _grid_normal_sign(curtain_mid, rows, cols)),
            (first_inner, rows, cols, False, -_grid_normal_sign(curtain_mid, rows, cols)),
        ),
    )


def _grid_normal_sign(points: np.ndarray, rows: int, cols: int) -> float:
    """+1 if cross(d_row, d_col) points away from the vertical axis on this grid, else -1."""
    grid = points.reshape(rows, cols, 3)
    n = np.cross(np.gradient(grid, axis=0), np.gradient(grid, axis=1))
    radial = grid * np.array([1.0, 0.0, 1.0])
    return 1.0 if np.einsum("ijk,ijk->", n, radial) > 0 else -1.0


def _orient_outwards(vertices: np.ndarray, triangles: np.ndarray, centre: tuple[float, float, float] | None
                     ) -> np.ndarray:
    """Flip triangles whose normal points inwards: towards ``centre``, or (None) the vertical axis."""
    v = vertices[triangles]
    normal = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    mid = v.mean(axis=1)
    outward = mid - np.asarray(centre) if centre is not None else mid * np.array([1.0, 0.0, 1.0])
    flip = np.einsum("ij,ij->i", normal, outward) < 0
    out = triangles.copy()
    out[flip] = out[flip][:, [0, 2, 1]]
    return out


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation (x right, y up, z to the camera) for pose angles in degrees (schema convention)."""
    y, p, r = np.radians([yaw, pitch, roll])
    # yaw > 0: the nose (+z) goes to -x (image left).
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    # pitch > 0: the nose goes down (-y).
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    # roll > 0: the crown (+y) goes to +x (image right), i.e. clockwise as seen.
    rz = np.array([[np.cos(r), np.sin(r), 0], [-np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return (rx @ ry @ rz).astype(np.float32)


def texture_parameters(params: FaceParams) -> np.ndarray:
    """Per-face inputs of the procedural texture (``TEXTURE_FIELDS`` order) from AUs and scene.

    The gains are sized so that each paper AU at intensity 5 changes a 64 x 64 render by 1.5-4 grey
    levels on average (a CNN must be able to read intensities 1-3 apart), while every effect stays in
    the region FACS describes for that AU.
    """
    au = params.au
    # Women's eyes are drawn a little larger (1.08 at gender 0, 0.92 at gender 1).
    # Each eye AU has its own signature so that a network can tell them apart (they all change the
    # aperture): the upper lid follows AU05 (and AU04 / AU45) only; AU07 lifts and straightens the lower
    # lid with a tension bulge under it; AU06 lifts the lower lid less and shows on the cheek instead
    # (raised, lit cheek apple, crow's feet, the infraorbital furrow below the bulge).
    eye_upper = (1.08 - 0.16 * params.gender + 0.28 * au("AU05") - 0.03 * au("AU07")
                 - 0.06 * au("AU04") - 0.2 * au("AU45"))
    eye_lower = 1.0 - 0.19 * au("AU07") - 0.07 * au("AU06") + 0.03 * au("AU05") - 0.2 * au("AU45")
    lip_scale = (1.0 - 0.15 * au("AU23")) * (1.0 - 0.03 * au("AU20")) * (1 - 0.05 * au("AU12"))
    mouth_gap = 0.007 * au("AU25") + 0.014 * au("AU26") + 0.004 * au("AU10")
    return np.array([
        params.skin,
        params.gender,
        params.hair,
        max(eye_upper, 0.0),
        max(eye_lower, 0.0),
        lip_scale,
        mouth_gap,
        au("AU04") / 5,
        max(au("AU01"), au("AU02")) / 5,
        au("AU06") / 5,
        0.25 + 1.0 * au("AU12") / 5 + 0.4 * au("AU10") / 5 + 0.3 * au("AU09") / 5 + 0.3 * au("AU06") / 5,
        au("AU09") / 5,
        au("AU17") / 5,
        min(1.0, (au("AU25") + au("AU10") + 0.5 * au("AU12")) / 5),
        # Exponent of the lower-lid curve: AU07 straightens the lid (a flatter, tenser line).
        max(0.7 - 0.1 * au("AU07"), 0.2),
        # The tension bulge under the tightened lower lid (AU07).
        au("AU07") / 5,
        au("AU12") / 5,
        # Mouth width relative to neutral: AU23 narrows it (on top of the mesh pulling the corners in).
        1.0 - 0.07 * au("AU23"),
        au("AU23") / 5,
    ], dtype=np.float32)
