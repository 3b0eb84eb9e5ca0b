"""Render ``FaceParams`` to images: a vectorised numpy z-buffer rasteriser with deferred shading.

Why this design: a pure-Python loop over triangles manages a few faces per second; here every
candidate pixel of every triangle of every face in a batch is tested at once (triangles are 1-3 pixels
wide at 64 x 64), the nearest surface per pixel is resolved with ``np.maximum.at`` on a depth buffer,
and shading runs only on the covered pixels: ambient + Lambertian lighting on interpolated vertex
normals, times a procedural albedo evaluated at the canonical surface coordinates (sharp at any size).
Texture edges are anti-aliased analytically (one-pixel ramps), the outline by a local blur, or by
supersampling when asked.

Deterministic: the same parameters give the same pixels (no randomness anywhere in this module).
Framing: see ``surrogate.face_model`` (eyes at 42 % of the height, mouth at 72 %).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from surrogate.face_model import (
    EYE_ROW,
    EYE_X,
    EYE_Y,
    MOUTH_Y,
    PIXELS_PER_UNIT,
    POSE_PIVOT,
    TEXTURE_FIELDS,
    FaceModel,
    FaceParams,
    face_model,
    hairline_height,
    rotation_matrix,
    texture_parameters,
)

DEFAULT_BACKGROUND = 0.78
# Version of what the renderer draws: a 3-D surrogate depends only on (attributes, seed, this), so bump it
# whenever a change alters pixels. Recorded with every 3-D surrogate batch and synthetic dataset.
# 1: the first face model; 2: the eye AUs' own signatures (AU05 upper lid, AU06 cheek, AU07 lower lid).
RENDERER_VERSION = "2"
# The name 3-D surrogates are recorded under, beside RENDERER_VERSION (batch outputs, service responses).
FACE_MODEL_3D = "face_model_3d"
"""Background grey level (0..1) when none is given: a plain light studio backdrop."""

MAX_SIZE = 1024
# Faces per rasterisation chunk: bounds peak memory (about 60 MB at 64 x 64) while keeping numpy busy.
_CHUNK_PIXELS = 64 * 64 * 4 * 48

_TEX = {name: i for i, name in enumerate(TEXTURE_FIELDS)}
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# Palette in linear RGB 0..1. Greyscale renders use the luma of each colour.
_SKIN_DARK = np.array([0.40, 0.27, 0.19], np.float32)
_SKIN_LIGHT = np.array([0.95, 0.80, 0.70], np.float32)
_HAIR_DARK = np.array([0.07, 0.055, 0.045], np.float32)
_HAIR_LIGHT = np.array([0.78, 0.62, 0.36], np.float32)
_SCLERA = np.array([0.80, 0.78, 0.75], np.float32)
_IRIS = np.array([0.30, 0.20, 0.13], np.float32)
_PUPIL = np.array([0.03, 0.03, 0.03], np.float32)
_LASH = np.array([0.07, 0.06, 0.06], np.float32)
_LIP_TINT = np.array([0.80, 0.50, 0.50], np.float32)
_MOUTH_INSIDE = np.array([0.15, 0.05, 0.05], np.float32)
_TEETH = np.array([0.88, 0.87, 0.82], np.float32)


def render(
    params: FaceParams,
    size: int = 64,
    *,
    rgb: bool = False,
    background: np.ndarray | float | None = None,
    supersample: int = 1,
) -> np.ndarray:
    """One face -> uint8 (size, size) grey or (size, size, 3) RGB."""
    backgrounds = None if background is None else [background]
    return render_batch([params], size, rgb=rgb, backgrounds=backgrounds, supersample=supersample)[0]


def render_batch(
    params_list: Sequence[FaceParams],
    size: int = 64,
    *,
    rgb: bool = False,
    backgrounds: Sequence[np.ndarray | float | None] | np.ndarray | None = None,
    supersample: int = 1,
    shader: Callable[[Sequence[FaceParams], int, int], np.ndarray] | None = None,
) -> np.ndarray:
    """Many faces at once (much faster per face than ``render``) -> uint8 (N, size, size)[, 3].

    ``backgrounds``: None (plain ``DEFAULT_BACKGROUND``), or one entry per face: a grey level 0..1,
    None, or a uint8 / float (0..1) image of shape (size, size) or (size, size, 3).
    ``supersample``: render at this factor and box-filter down (slower, smoother edges); at 1 the
    texture is still anti-aliased analytically and the silhouette by ``_smooth_silhouette``.
    ``shader``: another face model's ``(params, size, channels) -> float (B, size, size, C)`` with NaN
    where no surface was hit (``surrogate.ict_model``); None draws this module's face model.
    """
    if supersample not in (1, 2, 3, 4):
        raise ValueError(f"supersample must be 1, 2, 3 or 4, got {supersample!r}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 8 <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer in [8, {MAX_SIZE}], got {size!r}")
    params_list = list(params_list)
    for i, p in enumerate(params_list):
        if not isinstance(p, FaceParams):
            raise TypeError(f"params_list[{i}] must be FaceParams, got {type(p).__name__}")
    if backgrounds is not None and len(backgrounds) != len(params_list):
        raise ValueError(f"got {len(backgrounds)} backgrounds for {len(params_list)} faces")
    channels = 3 if rgb else 1
    n = len(params_list)
    out = np.empty((n, size, size, channels), dtype=np.uint8)
    if n == 0:
        return out if rgb else out[..., 0]
    if shader is None:
        model = face_model()

        def shader(part: Sequence[FaceParams], px: int, c: int) -> np.ndarray:
            return _render_linear(model, part, px, c)

    ss = supersample
    chunk = max(1, _CHUNK_PIXELS // (size * size * ss * ss))
    for start in range(0, n, chunk):
        part = params_list[start:start + chunk]
        bgs = None if backgrounds is None else [backgrounds[i] for i in range(start, start + len(part))]
        background = _background_stack(bgs, len(part), size, channels)
        hi = shader(part, size * ss, channels)  # (B, S*ss, S*ss, C), NaN = empty
        covered = ~np.isnan(hi[..., :1])
        bg_hi = np.repeat(np.repeat(background, ss, axis=1), ss, axis=2)
        hi = np.where(covered, hi, bg_hi)
        lo = hi.reshape(len(part), size, ss, size, ss, channels).mean(axis=(2, 4))
        if ss == 1:
            lo = _smooth_silhouette(lo, covered[..., 0])
        out[start:start + len(part)] = np.clip(np.rint(lo * 255.0), 0, 255).astype(np.uint8)
    return out if rgb else out[..., 0]


def _smooth_silhouette(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Anti-alias the face outline cheaply: pixels whose 4-neighbourhood mixes face and background
    are replaced by a 3x3 weighted average (a cheap stand-in for supersampling, about 1/4 the cost)."""
    edge = np.zeros_like(covered)
    edge[:, 1:] |= covered[:, 1:] != covered[:, :-1]
    edge[:, :-1] |= covered[:, 1:] != covered[:, :-1]
    edge[:, :, 1:] |= covered[:, :, 1:] != covered[:, :, :-1]
    edge[:, :, :-1] |= covered[:, :, 1:] != covered[:, :, :-1]
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = (4 * image + 2 * (padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2]
                                + padded[:, 1:-1, 2:])
               + padded[:, :-2, :-2] + padded[:, :-2, 2:] + padded[:, 2:, :-2] + padded[:, 2:, 2:]) / 16.0
    return np.where(edge[..., None], blurred, image)


def _background_stack(
    backgrounds: Sequence[np.ndarray | float | None] | None, n: int, size: int, channels: int
) -> np.ndarray:
    stack = np.full((n, size, size, channels), DEFAULT_BACKGROUND, dtype=np.float32)
    if backgrounds is None:
        return stack
    for i, bg in enumerate(backgrounds):
        if bg is None:
            continue
        if np.isscalar(bg):
            level = float(bg)  # type: ignore[arg-type]
            if not 0.0 <= level <= 1.0:
                raise ValueError(f"background {i}: grey level must be in [0, 1], got {level}")
            stack[i] = level
            continue
        arr = np.asarray(bg)
        scale = 255.0 if arr.dtype == np.uint8 else 1.0
        arr = arr.astype(np.float32) / scale
        if arr.shape[:2] != (size, size) or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
            raise ValueError(f"background {i}: expected shape ({size}, {size}) or ({size}, {size}, 3), "
                             f"got {arr.shape}")
        if arr.ndim == 2:
            arr = arr[..., None]
        if channels == 1 and arr.shape[2] == 3:
            arr = (arr @ _LUMA)[..., None]
        stack[i] = arr
    return stack


# ---------------------------------------------------------------------------------------------
# Geometry and rasterisation
# ---------------------------------------------------------------------------------------------

class MeshModel(Protocol):
    """What ``project`` needs of a face model (``FaceModel``, ``surrogate.ict_model.IctModel``)."""

    def vertices(self, params_list: list[FaceParams]) -> np.ndarray: ...

    def vertex_normals(self, vertices: np.ndarray) -> np.ndarray: ...


def project(
    model: MeshModel, params_list: Sequence[FaceParams], size: int, pivot: np.ndarray = POSE_PIVOT
) -> tuple[np.ndarray, np.ndarray]:
    """Posed vertices in pixel coordinates (x right, y down, z towards the camera) and normals.

    Returns ``screen`` (B, V, 3) float32 and ``normals`` (B, V, 3) unit vertex normals in camera space.
    ``pivot``: the centre of the head rotation in the model's head units.
    """
    verts = model.vertices(list(params_list))  # (B, V, 3)
    rot = np.stack([rotation_matrix(p.yaw, p.pitch, p.roll) for p in params_list])
    posed = np.matmul(verts - pivot, rot.transpose(0, 2, 1)) + pivot
    scale = np.array([p.scale for p in params_list], np.float32)[:, None] * (PIXELS_PER_UNIT * size)
    cx = (0.5 + np.array([p.shift_x for p in params_list], np.float32))[:, None] * size
    cy = (EYE_ROW + np.array([p.shift_y for p in params_list], np.float32))[:, None] * size
    screen = np.empty_like(posed)
    screen[..., 0] = cx + scale * posed[..., 0]
    screen[..., 1] = cy - scale * (posed[..., 1] - EYE_Y)
    screen[..., 2] = scale * posed[..., 2]
    normals = model.vertex_normals(posed)
    return screen.astype(np.float32), normals.astype(np.float32)


def rasterize(
    screen: np.ndarray, triangles: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer rasterisation of a batch of meshes, sampling pixel centres.

    ``screen``: (B, V, 3) pixel x, pixel y (down), depth (larger = nearer). Back faces are culled.
    Returns, for every covered pixel: flat pixel index into (B, size, size), batch index, triangle
    index and barycentric weights (P, 3) of the visible surface point.

    How it stays fast: the front-facing triangles of all faces are sorted by how many pixels their
    bounding box holds; step k then tests the k-th pixel of every box that has one, which is a prefix
    slice of the sorted arrays (no per-pixel gathers). At 64 px most boxes hold 1-4 pixels.
    """
    n_batch = screen.shape[0]
    xs, ys, zs = (np.ascontiguousarray(screen[..., i]) for i in range(3))
    i0, i1, i2 = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    x0, y0 = xs[:, i0], ys[:, i0]
    e1x, e1y = xs[:, i1] - x0, ys[:, i1] - y0
    e2x, e2y = xs[:, i2] - x0, ys[:, i2] - y0
    area = e1x * e2y - e2x * e1y
    # Outward (counter-clockwise in y-up) triangles have negative area with y pointing down.
    front = np.flatnonzero(area < -1e-9)
    b_idx, t_idx = np.divmod(front, len(triangles))
    x0, y0, e1x, e1y, e2x, e2y = (a.reshape(-1).take(front) for a in (x0, y0, e1x, e1y, e2x, e2y))
    x1, x2, y1, y2 = x0 + e1x, x0 + e2x, y0 + e1y, y0 + e2y
    col0 = np.maximum(np.ceil(np.minimum(np.minimum(x0, x1), x2) - 0.5), 0).astype(np.int32)
    col1 = np.minimum(np.floor(np.maximum(np.maximum(x0, x1), x2) - 0.5), size - 1).astype(np.int32)
    row0 = np.maximum(np.ceil(np.minimum(np.minimum(y0, y1), y2) - 0.5), 0).astype(np.int32)
    row1 = np.minimum(np.floor(np.maximum(np.maximum(y0, y1), y2) - 0.5), size - 1).astype(np.int32)
    width = col1 - col0 + 1
    counts = np.where((col1 >= col0) & (row1 >= row0), width * (row1 - row0 + 1), 0)
    # Radix sort (numpy's stable sort of 16-bit integers) is linear time: most boxes hold 0-4 pixels.
    key_dtype = np.int16 if counts.size == 0 or counts.max() < 32767 else np.int32
    order = np.argsort(-counts.astype(key_dtype), kind="stable")
    n_live = int(np.count_nonzero(counts))
    order = order[:n_live]
    counts = counts[order]
    b_idx, t_idx = b_idx[order], t_idx[order]
    inv = 1.0 / (e1x * e2y - e2x * e1y)[order]
    x0, y0 = x0[order], y0[order]
    e1x, e1y, e2x, e2y = e1x[order] * inv, e1y[order] * inv, e2x[order] * inv, e2y[order] * inv
    col0, row0, width = col0[order], row0[order], width[order]
    flat = (b_idx * size + row0) * size + col0  # flat index of each box's first pixel
    z0 = zs[b_idx, triangles[t_idx, 0]]
    dz1 = zs[b_idx, triangles[t_idx, 1]] - z0
    dz2 = zs[b_idx, triangles[t_idx, 2]] - z0
    # Number of boxes holding more than k pixels, for every k (counts are sorted descending).
    n_at = np.searchsorted(-counts, -np.arange(int(counts[0]) if n_live else 0), side="left")
    parts: list[tuple[np.ndarray, ...]] = []
    for k, n in enumerate(n_at):
        w = width[:n]
        dx_pix, dy_pix = k % w, k // w
        dx = (col0[:n] + dx_pix).astype(np.float32) + 0.5 - x0[:n]
        dy = (row0[:n] + dy_pix).astype(np.float32) + 0.5 - y0[:n]
        l1 = dx * e2y[:n] - dy * e2x[:n]
        l2 = dy * e1x[:n] - dx * e1y[:n]
        inside = np.nonzero((l1 >= 0) & (l2 >= 0) & (l1 + l2 <= 1))[0]
        if inside.size:
            l1, l2 = l1[inside], l2[inside]
            depth = z0[inside] + l1 * dz1[inside] + l2 * dz2[inside]
            key = flat[inside] + dy_pix[inside] * size + dx_pix[inside]
            parts.append((inside, key, l1, l2, depth))
    if not parts:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, np.zeros((0, 3), np.float32)
    owner, key, l1, l2, depth = (np.concatenate(p) for p in zip(*parts, strict=True))
    zbuf = np.full(n_batch * size * size, -np.inf, dtype=np.float32)
    np.maximum.at(zbuf, key, depth)
    win = np.nonzero(depth >= zbuf[key])[0]
    winner = np.full(n_batch * size * size, -1, dtype=np.int64)
    winner[key[win]] = win  # ties on shared edges: one deterministic winner
    pixel = np.nonzero(winner >= 0)[0]
    sel = winner[pixel]
    l1, l2 = l1[sel], l2[sel]
    bary = np.stack([1.0 - l1 - l2, l1, l2], axis=1)
    return pixel, b_idx[owner[sel]], t_idx[owner[sel]], bary


def _render_linear(model: FaceModel, params_list: Sequence[FaceParams], size: int, channels: int) -> np.ndarray:
    """Shaded faces as float (B, size, size, C) in 0..1 with NaN where no surface was hit."""
    screen, normals = project(model, params_list, size)
    pixel, b, t, bary = rasterize(screen, model.triangles, size)
    # One gather + barycentric blend for every per-vertex attribute: normal (3), canonical point (3),
    # female and male hairline heights (2).
    n_batch, n_vertices = normals.shape[:2]
    attributes = np.empty((n_batch, n_vertices, 8), np.float32)
    attributes[..., :3] = normals
    attributes[..., 3:] = _static_vertex_attributes(model)
    corners = attributes.reshape(-1, 8)[b[:, None] * n_vertices + model.triangles[t]]  # (P, 3, 8)
    values = corners[:, 0] * bary[:, :1] + corners[:, 1] * bary[:, 1:2] + corners[:, 2] * bary[:, 2:]
    normal, canon, hairlines = values[:, :3], values[:, 3:6], values[:, 6:]
    light = np.stack([light_direction(p) for p in params_list])[b]  # (P, 3)
    ambient = np.array([p.ambient for p in params_list], np.float32)
    strength = np.array([p.light_strength for p in params_list], np.float32)
    cosine = (normal * light).sum(axis=1) / np.maximum(np.sqrt((normal * normal).sum(axis=1)), 1e-12)
    shade = ambient[b] + strength[b] * np.maximum(cosine, 0.0)
    tex = np.stack([texture_parameters(p) for p in params_list])[b]  # (P, K)
    footprint = 1.0 / (PIXELS_PER_UNIT * size * np.array([p.scale for p in params_list], np.float32))
    albedo = _albedo(canon, hairlines, tex, footprint[b], channels)
    image = np.full((len(params_list) * size * size, channels), np.nan, dtype=np.float32)
    image[pixel] = albedo * shade[:, None]
    return image.reshape(len(params_list), size, size, channels)


_STATIC: dict[int, np.ndarray] = {}


def _static_vertex_attributes(model: FaceModel) -> np.ndarray:
    """(V, 5): canonical point and the female / male hairline height above each vertex (cached)."""
    key = id(model)
    if key not in _STATIC:
        female = hairline_height(model.canonical, 0.0)
        male = hairline_height(model.canonical, 1.0)
        _STATIC[key] = np.concatenate([model.canonical, female[:, None], male[:, None]], axis=1).astype(np.float32)
    return _STATIC[key]


def light_direction(params: FaceParams) -> np.ndarray:
    """Unit vector towards the light: azimuth > 0 from the image's right, elevation > 0 from above."""
    az, el = np.radians([params.light_azimuth, params.light_elevation])
    return np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Procedural albedo (canonical coordinates, so every feature follows the mesh deformation)
# ---------------------------------------------------------------------------------------------

def _cover(signed: np.ndarray, aa: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of the region where ``signed`` > 0 (ramp one pixel wide)."""
    return np.clip(0.5 + signed / aa, 0.0, 1.0)


def _mix(base: np.ndarray, colour: np.ndarray, amount: np.ndarray) -> np.ndarray:
    return base + (colour - base) * amount[:, None]


def _albedo(
    canon: np.ndarray, hairlines: np.ndarray, tex: np.ndarray, footprint: np.ndarray, channels: int
) -> np.ndarray:
    """Surface colour (P, C) in 0..1 at canonical points ``canon`` (P, 3).

    ``hairlines`` (P, 2): female and male hairline heights there; ``tex``: per-pixel texture parameters
    (``TEXTURE_FIELDS``); ``footprint``: pixel size in head units (the anti-aliasing ramp width)."""

    def col(rgb: np.ndarray) -> np.ndarray:
        return rgb if channels == 3 else np.array([rgb @ _LUMA], np.float32)

    X, Y, Z = canon[:, 0], canon[:, 1], canon[:, 2]
    ax = np.abs(X)
    aa = footprint
    front = np.clip((Z - 0.25) / 0.15, 0.0, 1.0)
    skin_t = tex[:, _TEX["skin"]]
    gender = tex[:, _TEX["gender"]]
    skin = col(_SKIN_DARK)[None] + (col(_SKIN_LIGHT) - col(_SKIN_DARK))[None] * skin_t[:, None]
    hair_t = tex[:, _TEX["hair"]][:, None]
    hair_col = col(_HAIR_DARK)[None] + (col(_HAIR_LIGHT) - col(_HAIR_DARK))[None] * hair_t

    # Shading baked into the albedo: eye sockets, under the brow, folds and wrinkles.
    dark = 0.3 * np.exp(-0.5 * (((ax - EYE_X) / 0.14) ** 2 + ((Y - EYE_Y - 0.03) / 0.07) ** 2))
    dark += 0.12 * np.exp(-0.5 * (((ax - 0.12) / 0.06) ** 2 + ((Y - EYE_Y) / 0.06) ** 2))  # inner corner
    nl = tex[:, _TEX["nasolabial"]]
    # Nasolabial fold: a line from the nose wing to beyond the mouth corner.
    t = np.clip((-0.34 - Y) / 0.32, 0.0, 1.0)
    fold_x = 0.12 + 0.14 * t
    fold_fade = np.clip((-0.31 - Y) / 0.04, 0.0, 1.0) * np.clip((Y + 0.72) / 0.04, 0.0, 1.0)
    dark += 0.2 * nl * np.exp(-0.5 * ((ax - fold_x) / 0.018) ** 2) * fold_fade
    # AU12: the pocket of skin bunched at each pulled-up lip corner.
    dark += 0.18 * tex[:, _TEX["lip_corner"]] * np.exp(-0.5 * (((ax - 0.225) / 0.02) ** 2
                                                               + ((Y - MOUTH_Y) / 0.025) ** 2))
    # AU04: vertical glabellar furrows between the brows and the shadow of the lowered brows.
    furrow = tex[:, _TEX["furrow"]]
    glabella = np.clip((Y - 0.06) / 0.04, 0.0, 1.0) * np.clip((0.28 - Y) / 0.04, 0.0, 1.0)
    dark += 0.55 * furrow * np.exp(-0.5 * ((ax - 0.04) / 0.016) ** 2) * glabella
    dark += 0.4 * furrow * np.exp(-0.5 * (((ax - EYE_X + 0.04) / 0.12) ** 2 + ((Y - 0.1) / 0.04) ** 2))
    lines = sum(np.exp(-0.5 * ((Y - y0) / 0.008) ** 2) for y0 in (0.35, 0.42, 0.49))
    dark += 0.12 * tex[:, _TEX["forehead_lines"]] * lines * (ax < 0.35)
    # AU06: crow's feet at the outer eye corners, the infraorbital furrow under the raised cheek and
    # the lit apple of the cheek above it.
    cheek_raise = tex[:, _TEX["crows_feet"]]
    crow = np.exp(-0.5 * (((ax - 0.47) / 0.045) ** 2 + ((Y - EYE_Y + 0.01) / 0.055) ** 2))
    dark += 0.42 * cheek_raise * crow * (0.6 + 0.4 * np.cos((Y - EYE_Y) * 110.0))
    furrow_y = EYE_Y - 0.13 - 0.25 * (ax - EYE_X)
    dark += 0.22 * cheek_raise * np.exp(-0.5 * (((ax - EYE_X - 0.02) / 0.1) ** 2 + ((Y - furrow_y) / 0.018) ** 2))
    dark -= 0.12 * cheek_raise * np.exp(-0.5 * (((ax - 0.33) / 0.08) ** 2 + ((Y + 0.21) / 0.06) ** 2))
    # AU07: the tension bulge right under the tightened lower lid.
    lid_fold = np.exp(-0.5 * (((ax - EYE_X) / 0.1) ** 2 + ((Y - EYE_Y + 0.07) / 0.013) ** 2))
    dark += 0.3 * tex[:, _TEX["lid_fold"]] * lid_fold
    nose_lines = sum(np.exp(-0.5 * ((Y - y0) / 0.008) ** 2) for y0 in (-0.02, 0.03))
    dark += 0.16 * tex[:, _TEX["nose_wrinkle"]] * nose_lines * (ax < 0.08)
    chin = np.exp(-0.5 * ((X / 0.1) ** 2 + ((Y + 0.83) / 0.05) ** 2))
    dark += 0.12 * tex[:, _TEX["chin_wrinkle"]] * chin * (0.5 + 0.5 * np.cos(X * 90.0) * np.cos(Y * 90.0))
    dark += 0.1 * np.exp(-0.5 * ((ax / 0.07) ** 2 + ((Y + 0.43) / 0.025) ** 2))  # under the nose
    # Beard shadow on male faces: jaw, chin and upper lip a little darker.
    beard = np.clip(2.0 * gender - 1.0, 0.0, 1.0) * np.clip((-0.42 - Y) / 0.08, 0.0, 1.0) * (Y > -1.02)
    dark += 0.13 * beard * np.clip((0.62 - ax) / 0.1, 0.0, 1.0)
    colour = skin * (1.0 - dark * front)[:, None]
    if channels == 3:  # a little colour in the cheeks
        blush = 0.06 * np.exp(-0.5 * (((ax - 0.36) / 0.1) ** 2 + ((Y + 0.25) / 0.1) ** 2)) * front
        colour = colour * (1.0 + blush[:, None] * np.array([0.6, -0.3, -0.3], np.float32))
    colour[Y < -1.05] *= 0.92  # neck, a little darker than the face

    # Brows: dark arcs, thicker for men, tapering outwards.
    brow_y = 0.19 + (0.035 + 0.02 * (1 - gender)) * (1.0 - ((ax - 0.27) / 0.2) ** 2)
    thick = (0.018 + 0.018 * gender) * (1.0 - 0.45 * np.clip((ax - 0.1) / 0.38, 0.0, 1.0))
    brow = _cover(thick - np.abs(Y - brow_y), aa) * _cover(np.minimum(ax - 0.07, 0.48 - ax), aa) * front
    brow_col = np.minimum(hair_col * 0.8 + 0.05, skin * 0.5)  # brows stay darker than the skin
    colour = _mix(colour, brow_col, 0.9 * brow)

    # Eyes: an almond aperture whose lids follow AU05 / AU06 / AU07 / AU45, iris, pupil, lashes.
    u = (ax - EYE_X) / 0.125
    v = Y - EYE_Y
    prof = np.clip(1.0 - u * u, 0.0, 1.0)
    upper = 0.048 * tex[:, _TEX["eye_upper"]] * prof ** 0.6
    lower = -0.034 * tex[:, _TEX["eye_lower"]] * prof ** tex[:, _TEX["lower_lid_shape"]]
    aperture = _cover(np.minimum(upper - v, v - lower), aa) * front * (np.abs(u) < 1.0)
    r = np.hypot(ax - EYE_X, v)
    eye = _mix(np.broadcast_to(col(_SCLERA), colour.shape).copy(), col(_IRIS), _cover(0.05 - r, aa))
    eye = _mix(eye, col(_PUPIL), _cover(0.022 - r, aa))
    colour = _mix(colour, eye, aperture)
    above = v - upper
    lash = _cover(np.minimum(above + 0.003, 0.008 + 0.012 * np.sqrt(prof) - above), aa) * (np.abs(u) < 1.08)
    below = lower - v
    lash_low = 0.5 * _cover(np.minimum(below + 0.002, 0.004 - below), aa) * (np.abs(u) < 1.0)
    colour = _mix(colour, col(_LASH), np.maximum(lash, lash_low) * front)
    crease = 0.12 * np.exp(-0.5 * ((v - upper - 0.035 * np.sqrt(prof)) / 0.008) ** 2) * (np.abs(u) < 1.0)
    colour *= (1.0 - crease * front)[:, None]

    # Nostrils.
    nostril = _cover(1.0 - np.hypot((ax - 0.06) / 0.03, (Y + 0.375) / 0.013), aa / 0.013) * front
    colour = _mix(colour, col(_MOUTH_INSIDE) * 0.6, 0.85 * nostril)

    # Mouth: lips (thinner with AU23), the lip line, and an opening with teeth (AU25 / AU26 / AU10).
    half = 0.21 * tex[:, _TEX["mouth_width"]]
    inm = np.clip(1.0 - (ax / half) ** 2, 0.0, 1.0)
    gap = tex[:, _TEX["mouth_gap"]] * np.sqrt(inm)  # the opening is widest in the middle
    lip_scale = tex[:, _TEX["lip_scale"]] * (1.08 - 0.16 * gender)
    bow = 0.006 * np.exp(-0.5 * ((ax - 0.045) / 0.025) ** 2) - 0.004 * np.exp(-0.5 * (ax / 0.015) ** 2)
    top = 0.036 * lip_scale * np.sqrt(inm) + bow * (inm > 0)
    bottom = 0.05 * lip_scale * inm ** 0.6
    d_up = Y - (MOUTH_Y + 0.5 * gap)
    d_lo = (MOUTH_Y - 0.5 * gap) - Y
    lip = np.maximum(_cover(np.minimum(d_up, top - d_up), aa), _cover(np.minimum(d_lo, bottom - d_lo), aa))
    lip *= _cover(half - ax, aa)
    lip_col = colour * (col(_LIP_TINT) * (0.97 - 0.17 * (1 - gender))[:, None])
    colour = _mix(colour, lip_col, lip * front)
    # AU23: the lips press together and roll in, darkening the line between them.
    press = tex[:, _TEX["lip_press"]] * np.exp(-0.5 * ((Y - MOUTH_Y) / 0.016) ** 2) * _cover(half - ax, aa)
    # Vertical wrinkles of the tightened skin above the upper lip.
    pucker = np.exp(-0.5 * ((Y - MOUTH_Y - 0.07) / 0.025) ** 2) * _cover(0.17 - ax, aa) * (ax > 0.03)
    press += 0.3 * tex[:, _TEX["lip_press"]] * pucker * (0.6 + 0.4 * np.cos(ax * 60.0))
    colour *= (1.0 - 0.5 * press * front)[:, None]
    opening = _cover(np.minimum(0.004 + 0.5 * gap - np.abs(Y - MOUTH_Y), half * 1.01 - ax), aa) * front
    inside = _mix(np.broadcast_to(col(_MOUTH_INSIDE), colour.shape).copy(), col(_TEETH),
                  tex[:, _TEX["teeth"]] * _cover(Y - MOUTH_Y + 0.2 * gap, aa) * _cover(0.15 - ax, aa)
                  * (gap > 0.006))
    colour = _mix(colour, inside, opening)

    # Hair (on top of everything): above the hairline, with a faint strand texture.
    hairline = hairlines[:, 0] + (hairlines[:, 1] - hairlines[:, 0]) * gender
    hair = _cover(Y - hairline, aa + 0.02) * (Y > -1.05)
    strands = 0.93 + 0.07 * np.sin(ax * 70.0 + Z * 50.0 + Y * 9.0)
    colour = _mix(colour, hair_col * strands[:, None], hair)
    return np.clip(colour, 0.0, 1.0).astype(np.float32)
