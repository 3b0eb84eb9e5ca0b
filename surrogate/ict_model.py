"""A scanned, FACS-based face model for the 3-D path: ICT-FaceKit Light (USC ICT, MIT licence).

The mesh, its identity PCA shapes and its ARKit-style expression blendshapes come from light-stage scans
(``surrogate/third_party/ict_facekit/``, packed by ``scripts/pack_ict_facekit.py``; the kit's LICENSE is beside
the data). This module adds what the kit lacks and renders with the project's rasteriser
(``surrogate.render.rasterize``); see docs/face_model.md:

* identity: ``FaceParams.identity`` (``N_IDENTITY`` standard-normal numbers) are the coefficients of the
  kit's leading identity shapes times ``IDENTITY_SCALE``; gender moves along ``gender_direction`` (a
  fixed direction in that same PCA space, solved from sex differences of face measurements) after the
  identity's own component along it is removed, plus albedo cues (brows, beard shadow, lip tint, hair);
* expression: each AU intensity 0..5 drives its FACS-mapped blendshapes (``AU_BLENDSHAPES``) with the
  weight ``gain * (intensity / 5) ** gamma`` (``AU_CURVE``); AU06 only by what it exceeds of the AU06 the
  project's readers infer from the requested AU07 and AU12 (``drawn_au06``);
* eyes, eye sockets, the mouth cavity and long hair (absent from the packed kit) are built here: a rigid
  eyeball cap per eye that follows the identity, dark caps that close the eye and mouth openings, and a
  hair sheet let out for women (``long_hair``);
* colour is per vertex (skin, lips, brows, lid lines, hair, eyes), computed on the neutral mesh so it
  follows every deformation; shading is ambient (with a static cavity term) + Lambertian + a little
  specular on smooth vertex normals.

Framing and pose follow ``surrogate.face_model`` (eyes at ``EYE_ROW``, the mouth at ``MOUTH_ROW``, the
schema's pose convention), so the two models are interchangeable in every caller. Up to ``LOD_MAX_PIXELS``
a reduced mesh is drawn (``ict_model_reduced``), which is what makes it as fast as the parametric model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.face_model import (
    EYE_Y,
    MOUTH_Y,
    N_IDENTITY,
    SUPPORTED_AUS,
    FaceParams,
)
from surrogate.landmarks import implied_au06
from surrogate.render import light_direction, rasterize, render_batch
from surrogate.render import project as _project

ICT_DATA_ENV = "SURROGATE_ICT_DATA"
# Inside the package (not beside it in the checkout), so the wheel and the Bento carry it
# (pyproject.toml package-data, bentofile.yaml include).
ICT_DATA_DIR = Path(__file__).resolve().parent / "third_party" / "ict_facekit"
# Version of what this model draws: a 3-D surrogate depends only on (attributes, seed, model, this).
ICT_MODEL_VERSION = "6"
FACE_MODEL_ICT = "face_model_3d_ict"

# AU -> (blendshape, weight at full activation): the kit's FACS table (AU04 browDown, AU05 eyeWide, AU06
# cheekSquint, AU07 eyeSquint, AU12 mouthSmile) and the nearest shapes for the AUs it does not list.
AU_BLENDSHAPES: dict[str, tuple[tuple[str, float], ...]] = {
    "AU01": (("browInnerUp_L", 1.0), ("browInnerUp_R", 1.0)),
    "AU02": (("browOuterUp_L", 1.0), ("browOuterUp_R", 1.0)),
    "AU04": (("browDown_L", 1.0), ("browDown_R", 1.0)),
    "AU05": (("eyeWide_L", 1.0), ("eyeWide_R", 1.0)),
    "AU06": (("cheekSquint_L", 1.0), ("cheekSquint_R", 1.0)),
    # Lid tightener: the lower lid rises (eyeSquint) and the aperture narrows a little (eyeBlink).
    "AU07": (("eyeSquint_L", 1.0), ("eyeSquint_R", 1.0), ("eyeBlink_L", 0.12), ("eyeBlink_R", 0.12)),
    "AU09": (("noseSneer_L", 1.0), ("noseSneer_R", 1.0)),
    "AU10": (("mouthUpperUp_L", 1.0), ("mouthUpperUp_R", 1.0)),
    # Lip corner puller. The kit's smile, at the gain AU_CURVE gives it, also presses and thins the lips,
    # which both MediaPipe (mouthPress) and dlib (lip-red height) read as the lip tightener AU23; FACS's
    # AU12 leaves the lips as they are, so a little outward roll keeps their red.
    "AU12": (("mouthSmile_L", 1.0), ("mouthSmile_R", 1.0), ("mouthRollUpper", -0.2), ("mouthRollLower", -0.2)),
    "AU14": (("mouthDimple_L", 1.0), ("mouthDimple_R", 1.0)),
    "AU15": (("mouthFrown_L", 1.0), ("mouthFrown_R", 1.0)),
    "AU17": (("mouthShrugLower", 1.0),),
    "AU20": (("mouthStretch_L", 1.0), ("mouthStretch_R", 1.0)),
    # Lip tightener (not in the kit's table): the red narrowed by rolling the lips in, pressed together a
    # little. The kit's full mouthPress also pushes the lower lip and chin up and forward, which a reader
    # does not take for a tightener on a smiling mouth; the roll-in is what it reads, smiling or not.
    "AU23": (("mouthPress_L", 0.5), ("mouthPress_R", 0.5), ("mouthRollUpper", 0.6), ("mouthRollLower", 0.6)),
    "AU25": (("jawOpen", 0.08), ("mouthLowerDown_L", 0.5), ("mouthLowerDown_R", 0.5)),
    "AU26": (("jawOpen", 0.45),),
    "AU45": (("eyeBlink_L", 1.0), ("eyeBlink_R", 1.0)),
}
# AU -> (gain, gamma): blendshape activation = gain * (intensity / 5) ** gamma. Gains above 1 exaggerate
# a shape whose full activation is too small to read at 64 px; gamma < 1 lifts low intensities. AU05's
# 1.6 holds back the low intensities, which MediaPipe's eyeWide reads as much too wide (intensity 0.5 read
# as 2.3 of 5 with 0.8) and whose opened eye it then reads as less eyeSquint (AU07). AU07's
# 0.6 lifts the low intensities that MediaPipe's eyeSquint otherwise reads below its rest level; AU12's
# 1.0 keeps the strongest smiles from tightening the lips into what MediaPipe reads as mouthPress (AU23)
# (docs/face_model.md, "Why AU05, AU07 and AU23 read weakly"). AU04's 1.2 holds back the middle of the
# range, which read above the request once the cheek raise was drawn once (``drawn_au06``), and its gain
# of 4.0 reaches the top of the scale with the eyes still open (docs/face_model.md, "On the corpus draw").
AU_CURVE: dict[str, tuple[float, float]] = {au: (1.0, 1.0) for au in SUPPORTED_AUS}
AU_CURVE.update({
    "AU04": (4.0, 1.2),
    "AU05": (4.5, 1.6),
    "AU06": (1.5, 0.8),
    "AU07": (3.0, 0.6),
    "AU12": (1.8, 1.0),
    "AU23": (2.5, 1.0),
})


def drawn_au06(params: FaceParams) -> float:
    """The cheek raise drawn for a request: AU06 less what its AU07 and AU12 already imply.

    The project's readers (MediaPipe, and the reconstruction network trained on its readings) report AU06
    as a proxy of the eye-squint and smile levels (``surrogate.landmarks.implied_au06``); a vector they
    measured carries no cheek raise beyond what its AU07 and AU12 show. Drawing cheekSquint on top of the
    squint and the smile drew that cheek raise twice: MediaPipe read it as more brow lowering (AU04),
    squint and smile than requested (docs/face_model.md, "On the corpus draw"). An AU06 beyond the implied
    level (another extractor's, or a hand-set vector) is drawn in full.
    """
    return max(0.0, params.au("AU06") - float(implied_au06(params.au("AU07"), params.au("AU12"))))


IDENTITY_SCALE = 1.0
"""Coefficient of identity shape k per unit of ``FaceParams.identity[k]``: the kit's shapes are already
scaled by their PCA standard deviation (their size falls from 0.47 cm RMS for the first to 0.03 cm
for the sixteenth), so standard-normal coefficients give the scanned population's spread."""

# Sex differences the gender direction is solved for (male minus female, cm; adult means from
# anthropometric surveys, rounded): bigonial (jaw) width, brow-ridge protrusion over the eyes, nose width,
# nose length, lower-face height (nose base to chin), lip height (upper + lower red).
GENDER_TARGETS_CM: dict[str, float] = {
    "jaw_width": 1.0,
    "brow_ridge": 0.35,
    "nose_width": 0.3,
    "nose_length": 0.4,
    "lower_face": 0.8,
    "lip_height": -0.25,
    "chin_width": 0.4,
}

_SKIN_DARK = np.array([0.36, 0.24, 0.17], np.float32)
_SKIN_LIGHT = np.array([0.93, 0.78, 0.68], np.float32)
_HAIR_DARK = np.array([0.06, 0.045, 0.04], np.float32)
_HAIR_LIGHT = np.array([0.72, 0.56, 0.32], np.float32)
# A near-white sclera: at 64 px the white above and below the iris is what shows where the lids are, and
# the large iris (below) keeps resting faces from reading as wide-eyed.
_SCLERA = np.array([0.95, 0.93, 0.90], np.float32)
# Iris and pupil edges, degrees off the eyeball's gaze axis. An iris of 40 degrees (1.5 cm across on the
# 1.2 cm eyeball) fills about 80 % of the relaxed opening, the lids covering its top and bottom, so only
# AU05 bares sclera above it; with 31 degrees (65 %) and a brighter sclera, MediaPipe read resting faces
# as wide-eyed (eyeWide 0.04, its AU05 2.2 of 5; now 0.01 and 0.5).
IRIS_DEG = 40.0
PUPIL_DEG = 15.0
EYE_RINGS = 16  # eyeball rings over 80 degrees: 5 degrees apart, so the iris and pupil edges stay round
_IRIS = np.array([0.28, 0.19, 0.12], np.float32)
_PUPIL = np.array([0.02, 0.02, 0.02], np.float32)
_LIP = np.array([0.72, 0.40, 0.40], np.float32)
_FACE_VERTICES = 9409  # the kit's face region is vertices 0..9408 (its README); the rest is head and neck
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
DEFAULT_BACKGROUND = 0.78

# Per-vertex materials (columns of IctModel.materials).
MATERIALS: tuple[str, ...] = (
    "skin", "lip", "brow", "brow_male", "lid_line", "hair", "hair_female", "beard", "sclera", "iris",
    "pupil", "cavity", "socket", "specular",
)
_M = {name: i for i, name in enumerate(MATERIALS)}


@dataclass(frozen=True)
class IctModel:
    """The mesh with eyes and caps added, its bases in head units and per-vertex materials (read-only)."""

    mean: np.ndarray  # (V, 3) float32 neutral face in head units (surrogate.face_model framing)
    triangles: np.ndarray  # (T, 3) int32, counter-clockwise seen from outside
    basis: np.ndarray  # (N_IDENTITY + 1 + len(SUPPORTED_AUS) + 1, V * 3) float32: identity, gender, AUs, hair
    gender_direction: np.ndarray  # (N_IDENTITY,) unit vector in identity-coefficient space
    gender_scale: float  # identity coefficients moved along gender_direction from gender 0.5 to 1
    materials: np.ndarray  # (V, len(MATERIALS)) float32 in 0..1
    pivot: np.ndarray  # (3,) rotation centre in head units
    landmarks: np.ndarray  # (68,) int32 vertex indices of the iBUG-68 landmarks
    protected: np.ndarray  # (V,) bool: borders of the openings and the added parts (never merged)
    side: np.ndarray  # (V,) int8: which lid / lip a vertex belongs to (0 elsewhere), kept apart when merging

    @cached_property
    def incidence(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """``_incidence`` of this model, kept on the model (a cache keyed by id() outlived rebuilt models)."""
        return _incidence(self)

    @property
    def n_vertices(self) -> int:
        return int(self.mean.shape[0])

    def coefficients(self, params: FaceParams) -> np.ndarray:
        """Weights of one face for the rows of ``basis``."""
        ident = np.zeros(N_IDENTITY, np.float32) if params.identity is None else params.identity * IDENTITY_SCALE
        # The gender attribute alone decides where the face sits along the gender direction.
        ident = ident - float(ident @ self.gender_direction) * self.gender_direction
        aus = np.zeros(len(SUPPORTED_AUS), np.float32)
        for i, au in enumerate(SUPPORTED_AUS):
            gain, gamma = AU_CURVE[au]
            aus[i] = gain * ((drawn_au06(params) if au == "AU06" else params.au(au)) / 5.0) ** gamma
        gender = 2.0 * (params.gender - 0.5) * self.gender_scale
        return np.concatenate([ident, [gender], aus, [long_hair(params.gender)]]).astype(np.float32)

    def vertices(self, params_list: Sequence[FaceParams]) -> np.ndarray:
        """(B, V, 3) deformed, unposed vertices in head units."""
        coeffs = np.stack([self.coefficients(p) for p in params_list])
        return (coeffs @ self.basis).reshape(len(params_list), -1, 3) + self.mean

    def vertex_normals(self, vertices: np.ndarray) -> np.ndarray:
        """Smooth unit normals (B, V, 3): area-weighted sums of the incident triangles' normals."""
        tri = self.triangles
        # Vertex-major layout (V, B, 3): every gather below copies whole contiguous rows.
        vt = np.ascontiguousarray(vertices.transpose(1, 0, 2))
        v0 = vt[tri[:, 0]]
        a, b = vt[tri[:, 1]] - v0, vt[tri[:, 2]] - v0
        face_n = np.empty((len(tri) + 1, vertices.shape[0], 3), np.float32)  # the last row stays zero
        face_n[-1] = 0.0
        face_n[:-1, :, 0] = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
        face_n[:-1, :, 1] = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
        face_n[:-1, :, 2] = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
        # Slot k holds every vertex's k-th incident triangle; vertices are sorted by degree, so slot k
        # beyond the common degree is a short prefix.
        order, slots = self.incidence
        normals = face_n[slots[0]]
        for slot in slots[1:]:
            normals[: len(slot)] += face_n[slot]
        out = np.empty((vertices.shape[0], len(order), 3), np.float32)
        out[:, order] = normals.transpose(1, 0, 2)
        out /= np.maximum(np.sqrt(np.einsum("bvc,bvc->bv", out, out)), 1e-12)[..., None]
        return out


def _incidence(model: IctModel) -> tuple[np.ndarray, list[np.ndarray]]:
    """Vertices by decreasing degree, and per slot k the k-th incident triangle of each."""
    tri = model.triangles
    vertex = tri.reshape(-1)
    owner = np.repeat(np.arange(len(tri)), 3)
    degree = np.bincount(vertex, minlength=model.n_vertices)
    order = np.argsort(-degree, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    by_vertex = np.lexsort((owner, rank[vertex]))
    sorted_rank = rank[vertex][by_vertex]
    start = np.searchsorted(sorted_rank, np.arange(len(order)))
    slots = []
    for k in range(int(degree.max())):
        n = int((degree > k).sum())
        slots.append(owner[by_vertex[start[:n] + k]].astype(np.int64))
    return order, slots


LONG_HAIR_GENDER = (0.35, 0.5)
"""P(male) up to which the long hair is fully let out, and from which it is tucked (short hair). Hair length
is the gender cue an outside reader leans on most: recon v3's gender AUC on 300 tuning rows was 0.800 with
(0.2, 0.55), 0.831 with these, while the shape's gender direction at 1.4 or 1.8 times its length left it at
0.797 (docs/face_model.md)."""


def long_hair(gender: float) -> float:
    """How far the long hair is let out: 1 (long) to 0 (short) across ``LONG_HAIR_GENDER``."""
    full, none = LONG_HAIR_GENDER
    return float(np.clip((none - gender) / (none - full), 0.0, 1.0))


def data_dir() -> Path:
    """Folder of the packed kit: ``$SURROGATE_ICT_DATA``, else ``third_party/ict_facekit`` in this package."""
    return Path(os.environ.get(ICT_DATA_ENV) or ICT_DATA_DIR)


@lru_cache(maxsize=1)
def ict_model() -> IctModel:
    """Load the packed kit and build the renderable model (cached; about a second)."""
    path = data_dir() / "ict_face.npz"
    if not path.is_file():
        raise FileNotFoundError(f"ICT-FaceKit data not found at {path} (set {ICT_DATA_ENV} to its folder)")
    with np.load(path) as kit:
        neutral = kit["neutral"].astype(np.float64)
        quads = kit["quads"]
        landmarks = kit["landmarks"]
        ident = kit["ident"].astype(np.float32)
        shapes = dict(zip((str(n) for n in kit["expr_names"]), kit["expr"].astype(np.float32), strict=True))
    return _build(neutral, quads, landmarks, ident, shapes)


# ---------------------------------------------------------------------------------------------
# Building the model
# ---------------------------------------------------------------------------------------------

def _boundary_loops(quads: np.ndarray) -> list[np.ndarray]:
    """Ordered vertex loops of the mesh's open borders (edges used by one polygon only)."""
    edges = np.stack([quads, np.roll(quads, -1, axis=1)], axis=2).reshape(-1, 2)
    edges = edges[edges[:, 0] != edges[:, 1]]
    key = np.sort(edges, axis=1)
    uniq, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    border = edges[counts[inverse.reshape(-1)] == 1]
    following = dict(zip(border[:, 0].tolist(), border[:, 1].tolist(), strict=True))
    loops, seen = [], set()
    for start in following:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = following[v]
        loops.append(np.array(loop))
    return loops


def _cap(loop: np.ndarray, points: np.ndarray, depth: float, shrink: float, first: int
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Close a border loop with a recessed cap: a ring ``depth`` behind it, shrunk towards its centre,
    and a centre point. Returns new points (n + 1, 3), triangles, and for each new point the loop
    vertices whose mean deformation it follows (n + 1 rows of weights over the loop)."""
    ring_src = points[loop]
    centre = ring_src.mean(axis=0)
    ring = centre + (ring_src - centre) * shrink - np.array([0.0, 0.0, depth])
    apex = centre - np.array([0.0, 0.0, depth * 1.4])
    n = len(loop)
    tris = []
    for i in range(n):
        j = (i + 1) % n
        a, b, c, d = loop[i], loop[j], first + j, first + i
        tris += [(a, b, c), (a, c, d), (first + i, first + j, first + n)]
    weights = np.zeros((n + 1, n), np.float32)
    weights[np.arange(n), np.arange(n)] = 1.0
    weights[n] = 1.0 / n
    return np.concatenate([ring, apex[None]]), np.array(tris, np.int64), weights


def _orient(tris: np.ndarray, points: np.ndarray, towards: np.ndarray) -> np.ndarray:
    """Flip triangles whose normal points away from ``towards`` (a direction per triangle or one)."""
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    normal = np.cross(b - a, c - a)
    flip = (normal * towards).sum(axis=-1) < 0
    out = tris.copy()
    out[flip] = out[flip][:, [0, 2, 1]]
    return out


def _eyeball(centre: np.ndarray, radius: float, first: int, rings: int = 10, segments: int = 18
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Front cap (to 80 degrees off the gaze) of a sphere looking along +z: points, triangles, polar angle."""
    theta = np.radians(np.linspace(0.0, 80.0, rings + 1))[1:]
    phi = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    direction = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1).reshape(-1, 3)
    points = np.concatenate([centre[None] + [[0.0, 0.0, radius]], centre + radius * direction])
    polar = np.concatenate([[0.0], t.reshape(-1)])
    tris = [(first, first + 1 + (s + 1) % segments, first + 1 + s) for s in range(segments)]
    for r in range(rings - 1):
        for s in range(segments):
            a = first + 1 + r * segments + s
            b = first + 1 + r * segments + (s + 1) % segments
            tris += [(a, b + segments, a + segments), (a, b, b + segments)]
    return points, np.array(tris, np.int64), polar


def _hair_curtain(neutral: np.ndarray, lm: np.ndarray, rows: int = 12, columns: int = 22
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Long hair: a two-sided sheet that hugs the skull from the crown down to the widest part of the
    head, then falls straight round the sides and back to below the chin. Returns the hanging points
    (2 * rows * columns, 3; outer side then inner side), their triangles (indices from 0), the scan vertex
    each follows (identity), and where each goes when tucked inside the skull (short hair)."""
    centre_z = lm[0, 2] - 1.0
    top, bottom = float(neutral[:, 1].max()) - 1.0, lm[8, 1] - 4.5
    y = np.linspace(top, bottom, rows)
    skull = neutral[neutral[:, 1] > lm[36:48, 1].mean() - 1.0]
    reach = np.hypot(skull[:, 0], skull[:, 2] - centre_z)
    # Radius of the head's cross-section at each height (+0.4 cm), never narrowing on the way down.
    radius = np.array([reach[np.abs(skull[:, 1] - h) < 0.8].max(initial=0.0) for h in y]) + 0.4
    radius = np.maximum.accumulate(np.maximum(radius, 0.5 * radius.max()))
    radius += 1.0 * np.clip((y[0] - y) / (y[0] - y[-1]), 0.0, 1.0) ** 3  # the ends flare out a little
    angle = np.radians(np.linspace(62.0, 298.0, columns))[None, :]  # from the front, round the back
    r, h = radius[:, None], y[:, None]
    outer = np.stack(np.broadcast_arrays(r * np.sin(angle), h, centre_z + r * np.cos(angle)), -1).reshape(-1, 3)
    # Tucked, the whole sheet shrinks to one point inside the skull (plus the identity and gender shape
    # it follows): tiny hidden triangles that cost the rasteriser next to nothing.
    tucked = np.tile([[0.0, top - 6.0, centre_z]], (len(outer), 1))
    grid = np.arange(rows * columns).reshape(rows, columns)
    a, b, c, d = grid[:-1, :-1], grid[:-1, 1:], grid[1:, 1:], grid[1:, :-1]
    quads = np.stack([a, b, c, d], -1).reshape(-1, 4)
    n = rows * columns
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    tris = np.concatenate([tris, tris[:, ::-1] + n])  # the inner side: its own vertices, facing in
    nearest = np.array([np.argmin(((neutral - q) ** 2).sum(axis=1)) for q in outer])
    return np.concatenate([outer, outer]), tris, np.concatenate([nearest, nearest]), np.concatenate([tucked, tucked])


def _curve(xs: np.ndarray, ys: np.ndarray, x: np.ndarray) -> np.ndarray:
    order = np.argsort(xs)
    return np.interp(x, xs[order], ys[order])


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _face_materials(p: np.ndarray, lm: np.ndarray, n_face: int) -> np.ndarray:
    """Materials of the scanned mesh's vertices from the neutral positions ``p`` (cm) and landmarks."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ax = np.abs(x)
    m = np.zeros((len(p), len(MATERIALS)), np.float32)
    front = (np.arange(len(p)) < n_face) & (z > lm[8, 2] - 4.0)
    # Lips: between the outer upper and lower lip contours (landmarks 48-54 and 54-59 + 48).
    upper = lm[48:55]
    lower = lm[[54, 55, 56, 57, 58, 59, 48]]
    top = _curve(upper[:, 0], upper[:, 1], x)
    bottom = _curve(lower[:, 0], lower[:, 1], x)
    corner = lm[54, 0] + 0.1
    lip = (_smoothstep(-0.12, 0.12, top - y) * _smoothstep(-0.12, 0.12, y - bottom)
           * _smoothstep(-0.15, 0.1, corner - ax) * (z > lm[62, 2] - 1.2) * front)
    m[:, _M["lip"]] = lip
    # Brows: a band under the brow landmarks (17-21 / 22-26), thick in the middle, tapering outwards.
    brow_pts = lm[22:27]
    brow_y = _curve(brow_pts[:, 0], brow_pts[:, 1], ax) - 0.25
    span = _smoothstep(brow_pts[0, 0] - 0.4, brow_pts[0, 0], ax) * _smoothstep(-0.2, 0.4, brow_pts[-1, 0] + 0.2 - ax)
    taper = 1.0 - 0.5 * np.clip((ax - brow_pts[0, 0]) / (brow_pts[-1, 0] - brow_pts[0, 0]), 0.0, 1.0)
    dist = np.abs(y - brow_y)
    in_front = front & (z > lm[36, 2] - 1.0)
    m[:, _M["brow"]] = _smoothstep(-0.45 * taper, -0.3 * taper, -dist) * span * in_front
    m[:, _M["brow_male"]] = _smoothstep(-0.65 * taper, -0.45 * taper, -dist) * span * in_front
    # Beard shadow: the skin below the nose and around the mouth and chin, fading towards the ears.
    nose_base = lm[33, 1]
    # Narrow under the nose (a moustache), widening down to the whole jaw below the mouth.
    below_nose = np.clip(nose_base - y, 0.0, None)
    reach = lm[54, 0] + 0.3 + 0.8 * below_nose
    m[:, _M["beard"]] = (_smoothstep(0.2, 1.0, below_nose) * _smoothstep(-0.8, 0.0, reach - ax)
                         * _smoothstep(lm[8, 1] - 2.0, lm[8, 1] - 0.3, y) * (1.0 - lip) * front)
    # Hair: everything above a hairline that runs over the forehead, down over the temples to the ears
    # and round the back of the head to the nape; the female one covers the ears and falls lower.
    centre_z = lm[0, 2] - 1.0
    azimuth = np.degrees(np.abs(np.arctan2(x, z - centre_z)))
    brow_top = lm[19, 1]
    eye_y = lm[36:48, 1].mean()
    knots = [0.0, 50.0, 75.0, 95.0, 120.0, 180.0]
    male = np.interp(azimuth, knots, [brow_top + 5.3, brow_top + 4.3, eye_y + 2.5, eye_y + 1.5, eye_y + 0.5,
                                      lm[8, 1] - 1.0])
    female = np.interp(azimuth, knots, [brow_top + 5.0, brow_top + 4.0, eye_y + 1.0, eye_y - 3.0, eye_y - 6.0,
                                        lm[8, 1] - 6.0])
    m[:, _M["hair"]] = _smoothstep(-0.3, 0.3, y - male)
    m[:, _M["hair_female"]] = _smoothstep(-0.3, 0.3, y - female)
    m[:, _M["skin"]] = 1.0
    m[:, _M["specular"]] = 0.25 + 0.35 * _smoothstep(0.5, 2.0, z - lm[36, 2]) * front + 0.2 * lip
    return m


def _cavity(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Static ambient occlusion proxy per vertex: how far the neighbours' mean lies in front of it
    (concave creases such as the eye sockets, nostrils and mouth corners come out dark)."""
    n = len(points)
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    count = np.bincount(edges[:, 0], minlength=n) + 1e-9
    mean = np.stack([np.bincount(edges[:, 0], points[edges[:, 1], c], minlength=n) for c in range(3)], 1)
    lap = mean / count[:, None] - points
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    fn = np.cross(b - a, c - a)
    normal = np.stack([np.bincount(tris.reshape(-1), np.repeat(fn[:, k], 3), minlength=n) for k in range(3)], 1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1), 1e-12)[:, None]
    concave = np.clip((lap * normal).sum(axis=1) / 0.15, 0.0, 1.0)
    # Two smoothing passes spread the darkening over a crease's neighbourhood.
    for _ in range(2):
        concave = 0.5 * concave + 0.5 * np.bincount(edges[:, 0], concave[edges[:, 1]], minlength=n) / count
    return concave.astype(np.float32)


def _gender_features(p: np.ndarray, lm_idx: np.ndarray) -> np.ndarray:
    """Face measurements (cm) of ``GENDER_TARGETS_CM`` for vertex positions ``p`` (..., V, 3)."""
    L = p[..., lm_idx, :]
    return np.stack([
        L[..., 12, 0] - L[..., 4, 0],  # jaw width at the gonial angles
        L[..., [19, 24], 2].mean(-1) - L[..., 36:48, 2].mean(-1),  # brow ridge over the eyes
        L[..., 35, 0] - L[..., 31, 0],  # nose width
        L[..., 27, 1] - L[..., 33, 1],  # nose length
        L[..., 33, 1] - L[..., 8, 1],  # lower face height
        L[..., 51, 1] - L[..., 57, 1],  # lip height
        L[..., 10, 0] - L[..., 6, 0],  # chin width
    ], axis=-1)


def _gender_direction(neutral: np.ndarray, ident: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, float]:
    """The smallest identity-coefficient change (ridge-regularised) that makes every face measurement
    of ``GENDER_TARGETS_CM`` differ by its male-minus-female value; returns (unit direction, half length)."""
    base = _gender_features(neutral, lm)
    jac = (_gender_features(neutral[None] + ident, lm) - base).T  # (features, modes): linear in the shapes
    target = np.array(list(GENDER_TARGETS_CM.values()))
    coeffs = np.linalg.solve(jac.T @ jac + 0.05 * np.eye(jac.shape[1]), jac.T @ target)
    half = coeffs / 2.0  # gender 1 is +half, gender 0 is -half
    length = float(np.linalg.norm(half))
    return (half / length).astype(np.float32), length


def _build(neutral: np.ndarray, quads: np.ndarray, landmarks: np.ndarray, ident: np.ndarray,
           shapes: dict[str, np.ndarray]) -> IctModel:
    n_scan = len(neutral)
    lm = neutral[landmarks]
    n_face = _FACE_VERTICES
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int64)
    tris = tris[(tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])]
    # The three openings of the face: two eyes and the mouth (the fourth border is the neck).
    loops = sorted(_boundary_loops(quads), key=len)
    eye_y = lm[36:48, 1].mean()
    openings = [lp for lp in loops if abs(neutral[lp, 1].mean() - lm[48:68, 1].mean()) < 1.5
                or abs(neutral[lp, 1].mean() - eye_y) < 1.5][:3]
    points = [neutral]
    all_tris = [tris]
    rows: list[tuple[np.ndarray, np.ndarray, bool]] = []  # per added part: (scan vertices, weights, rigid)
    materials = [_face_materials(neutral, lm, n_face)]
    first = n_scan
    for loop in openings:
        is_mouth = neutral[loop, 1].mean() < eye_y - 2.0
        depth, shrink = (1.2, 0.75) if is_mouth else (0.9, 0.55)
        cap_pts, cap_tris, weights = _cap(loop, neutral, depth, shrink, first)
        cap_tris = _orient(cap_tris, np.concatenate(points + [cap_pts]), np.array([0.0, 0.0, 1.0]))
        points.append(cap_pts)
        all_tris.append(cap_tris)
        rows.append((loop, weights, False))
        mat = np.zeros((len(cap_pts), len(MATERIALS)), np.float32)
        mat[:, _M["cavity" if is_mouth else "socket"]] = 1.0
        materials.append(mat)
        first += len(cap_pts)
        if not is_mouth:
            centre = neutral[loop].mean(axis=0)
            width = np.ptp(neutral[loop, 0])
            radius = 0.5 * width
            ball_centre = centre + np.array([0.0, 0.0, neutral[loop, 2].max() + 0.05 - centre[2] - radius])
            ball, ball_tris, polar = _eyeball(ball_centre, radius, first, rings=EYE_RINGS)
            ball_tris = _orient(ball_tris, np.concatenate(points + [ball]), np.concatenate(points + [ball])[
                ball_tris[:, 0]] - ball_centre)
            points.append(ball)
            all_tris.append(ball_tris)
            weights = np.full((len(ball), len(loop)), 1.0 / len(loop), np.float32)
            rows.append((loop, weights, True))
            mat = np.zeros((len(ball), len(MATERIALS)), np.float32)
            angle = np.degrees(polar)
            iris = _smoothstep(-IRIS_DEG - 2.0, -IRIS_DEG + 2.0, -angle)
            pupil = _smoothstep(-PUPIL_DEG - 1.5, -PUPIL_DEG + 1.5, -angle)
            mat[:, _M["sclera"]] = 1.0
            mat[:, _M["iris"]] = iris
            mat[:, _M["pupil"]] = pupil
            mat[:, _M["specular"]] = 1.0
            materials.append(mat)
            first += len(ball)
    hair_pts, hair_tris, hair_follow, hair_tucked = _hair_curtain(neutral, lm)
    # The mean shape holds the hair tucked inside the skull; the last basis row lets it out (long hair).
    hair_first = first
    radial = hair_pts * [1.0, 0.0, 1.0] - [0.0, 0.0, lm[0, 2] - 1.0]
    outer_side = np.arange(len(hair_tris)) < len(hair_tris) // 2
    towards = np.where(outer_side[:, None], radial[hair_tris[:, 0]], -radial[hair_tris[:, 0]])
    hair_tris = _orient(hair_tris, hair_pts, towards) + first
    points.append(hair_tucked)
    all_tris.append(hair_tris)
    rows.append((hair_follow, np.eye(len(hair_pts), dtype=np.float32), True))
    mat = np.zeros((len(hair_pts), len(MATERIALS)), np.float32)
    mat[:, _M["hair"]] = mat[:, _M["hair_female"]] = 1.0
    mat[:, _M["specular"]] = 0.15
    materials.append(mat)
    first += len(hair_pts)
    pts = np.concatenate(points)
    tris = np.concatenate(all_tris)
    mats = np.concatenate(materials)
    # Lid lines: the eye openings' border vertices (lashes and the lid margin), stronger on the upper lid.
    for loop in openings:
        if neutral[loop, 1].mean() > eye_y - 2.0:
            upper = neutral[loop, 1] > neutral[loop, 1].mean() - 0.1
            mats[loop, _M["lid_line"]] = np.where(upper, 1.0, 0.45)
    cavity = _cavity(pts, tris)
    mats[:n_scan, _M["cavity"]] = np.maximum(mats[:n_scan, _M["cavity"]], 0.6 * cavity[:n_scan])

    def extend(delta: np.ndarray, identity: bool = False) -> np.ndarray:
        """Deltas of the added points: each follows its loop vertices; the rigid parts (eyeballs, hair)
        follow identity shapes only."""
        out = [delta]
        for loop, weights, rigid in rows:
            out.append(np.zeros((len(weights), 3), np.float32) if rigid and not identity else weights @ delta[loop])
        return np.concatenate(out)

    ident_full = np.stack([extend(d, identity=True) for d in ident])
    au_rows = []
    for au in SUPPORTED_AUS:
        total = np.zeros_like(neutral, dtype=np.float32)
        for shape, weight in AU_BLENDSHAPES[au]:
            total += weight * shapes[shape]
        au_rows.append(extend(total))
    direction, length = _gender_direction(neutral, ident, landmarks)
    long_hair = np.zeros_like(pts)
    long_hair[hair_first:hair_first + len(hair_pts)] = hair_pts - hair_tucked
    # Head units: the eye midpoint at (0, EYE_Y, 0) and the mouth at MOUTH_Y, like face_model's framing.
    left, right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    origin = (left + right) / 2.0
    scale = (EYE_Y - MOUTH_Y) / float(origin[1] - lm[[48, 54, 51, 57], 1].mean())
    mean = (pts - origin) * scale + np.array([0.0, EYE_Y, 0.0])
    basis = np.concatenate([
        ident_full.reshape(len(ident), -1) * scale,
        # Gender: the identity shapes along the gender direction (its coefficient carries the length).
        np.tensordot(direction, ident_full, axes=1).reshape(1, -1) * scale,
        np.stack(au_rows).reshape(len(SUPPORTED_AUS), -1) * scale,
        long_hair.reshape(1, -1) * scale,
    ]).astype(np.float32)
    # Rotation centre: midway between eyes and mouth, 5 cm behind the eyes (inside the head).
    mouth_y = (lm[48:68, 1].mean() - origin[1]) * scale + EYE_Y
    pivot = np.array([0.0, (EYE_Y + mouth_y) / 2.0, -5.0 * scale], np.float32)
    protected = np.zeros(len(pts), bool)
    protected[n_scan:] = True
    for loop in openings:
        protected[loop] = True
    # Upper (1) or lower (2) lid or lip: the line through the eye corners or the mouth corners splits them.
    side = np.zeros(len(pts), np.int8)
    x, y = neutral[:, 0], neutral[:, 1]
    for a, b, margin in ((36, 39, 1.0), (42, 45, 1.0), (48, 54, 0.8)):
        pa, pb = lm[a], lm[b]
        lo, hi = min(pa[0], pb[0]) - margin, max(pa[0], pb[0]) + margin
        line = pa[1] + (pb[1] - pa[1]) * (x - pa[0]) / (pb[0] - pa[0])
        near = (x > lo) & (x < hi) & (np.abs(y - line) < 1.5) & (neutral[:, 2] > lm[a, 2] - 2.0)
        side[:n_scan][near] = np.where(y[near] > line[near], 1, 2) + (a // 12) * 2
    return IctModel(
        mean=mean.astype(np.float32), triangles=tris.astype(np.int32), basis=basis,
        gender_direction=direction, gender_scale=length, materials=mats, pivot=pivot,
        landmarks=landmarks.astype(np.int32), protected=protected, side=side,
    )


LOD_CELL_CM = 0.6
"""Cell size of the reduced mesh drawn at small sizes (``LOD_MAX_PIXELS``): at 64 px a pixel spans
about 0.36 cm of face, so cells of 0.5 cm lose nothing the pixels show and cut the mesh about fourfold."""
LOD_MAX_PIXELS = 96


@lru_cache(maxsize=1)
def ict_model_reduced() -> IctModel:
    """``ict_model()`` with its scanned surface merged into ``LOD_CELL_CM`` cells (cached)."""
    return reduce_mesh(ict_model(), LOD_CELL_CM)


def reduce_mesh(model: IctModel, cell_cm: float) -> IctModel:
    """Vertex clustering: the scanned vertices in one cell (and on one side of a lid or lip, facing one
    way) merge into the one nearest their mean, so every kept vertex keeps its exact blendshape deltas;
    borders of the openings and the added eyes and caps are kept whole."""
    cm = float(np.linalg.norm(model.mean[model.landmarks[42:48]].mean(0) - model.mean[model.landmarks[36:42]].mean(0)))
    cell = cell_cm * cm / 6.51  # head units per cm, from the kit's 6.51 cm inter-ocular distance
    normals = model.vertex_normals(model.mean[None])[0]
    facing = np.argmax(np.abs(normals), axis=1) * 2 + (normals[np.arange(len(normals)), np.argmax(np.abs(normals),
                                                                                              axis=1)] > 0)
    grid = np.floor(model.mean / cell).astype(np.int64)
    key = np.stack([grid[:, 0], grid[:, 1], grid[:, 2], facing, model.side], axis=1)
    key[model.protected] = -(np.arange(model.protected.sum())[:, None] + 1)  # each its own cluster
    _, cluster = np.unique(key, axis=0, return_inverse=True)
    cluster = cluster.reshape(-1)
    n_clusters = int(cluster.max()) + 1
    centre = np.stack([np.bincount(cluster, model.mean[:, c], n_clusters) for c in range(3)], 1)
    centre /= np.bincount(cluster, minlength=n_clusters)[:, None]
    dist = np.linalg.norm(model.mean - centre[cluster], axis=1)
    order = np.lexsort((dist, cluster))
    first = np.ones(len(order), bool)
    first[1:] = cluster[order][1:] != cluster[order][:-1]
    rep_of_cluster = order[first]  # nearest vertex to each cluster's mean
    rep = rep_of_cluster[cluster]
    tris = rep[model.triangles]
    tris = tris[(tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])]
    _, unique_rows = np.unique(np.sort(tris, axis=1), axis=0, return_index=True)
    tris = tris[np.sort(unique_rows)]
    keep = np.unique(tris)
    index = np.full(model.n_vertices, -1, np.int64)
    index[keep] = np.arange(len(keep))
    basis = model.basis.reshape(model.basis.shape[0], -1, 3)[:, keep].reshape(model.basis.shape[0], -1)
    return IctModel(
        mean=model.mean[keep], triangles=index[tris].astype(np.int32), basis=np.ascontiguousarray(basis),
        gender_direction=model.gender_direction, gender_scale=model.gender_scale, materials=model.materials[keep],
        pivot=model.pivot, landmarks=index[rep[model.landmarks]].astype(np.int32), protected=model.protected[keep],
        side=model.side[keep],
    )


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def project(model: IctModel, params_list: Sequence[FaceParams], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Posed vertices in pixel coordinates (x right, y down, z to the camera) and unit normals."""
    return _project(model, params_list, size, pivot=model.pivot)


def vertex_albedo(model: IctModel, params_list: Sequence[FaceParams], channels: int) -> np.ndarray:
    """(B, V, C) surface colour 0..1 per vertex: skin tone, hair colour and the gender cues per face."""
    m = model.materials
    col = (lambda rgb: rgb) if channels == 3 else (lambda rgb: np.array([rgb @ _LUMA], np.float32))
    out = np.empty((len(params_list), model.n_vertices, channels), np.float32)
    for i, p in enumerate(params_list):
        g = p.gender
        # Men's skin is on average a little darker and redder than women's of the same group.
        skin = col(_SKIN_DARK + (_SKIN_LIGHT - _SKIN_DARK) * p.skin) * (1.0 - 0.04 * g)
        hair = col(_HAIR_DARK + (_HAIR_LIGHT - _HAIR_DARK) * p.hair)
        colour = np.broadcast_to(skin, (model.n_vertices, channels)).copy()
        shade = 1.0 - 0.45 * m[:, _M["cavity"]] - 0.25 * np.clip(2.0 * g - 1.0, 0.0, 1.0) * m[:, _M["beard"]]
        colour *= shade[:, None]
        lip_col = skin * col(_LIP) * (1.15 - 0.2 * g)
        colour += (lip_col - colour) * (m[:, _M["lip"]] * (0.85 - 0.3 * g))[:, None]
        brow = np.clip(m[:, _M["brow"]] + g * (m[:, _M["brow_male"]] - m[:, _M["brow"]]), 0.0, 1.0)
        brow_col = np.minimum(hair * 0.8 + 0.04, skin * 0.45)
        colour += (brow_col - colour) * (0.85 * brow)[:, None]
        colour *= (1.0 - 0.7 * m[:, _M["lid_line"]])[:, None]
        hair_mask = m[:, _M["hair"]] + (1.0 - g) * (m[:, _M["hair_female"]] - m[:, _M["hair"]])
        colour += (hair - colour) * hair_mask[:, None]
        eye = m[:, _M["sclera"]]
        eye_col = col(_SCLERA) + (col(_IRIS) - col(_SCLERA)) * m[:, _M["iris"]][:, None]
        eye_col = eye_col + (col(_PUPIL) - eye_col) * m[:, _M["pupil"]][:, None]
        colour += (eye_col - colour) * eye[:, None]
        socket = m[:, _M["socket"]][:, None]
        colour += (skin * 0.35 - colour) * socket
        cavity = (m[:, _M["cavity"]] >= 1.0)[:, None]
        colour = np.where(cavity, skin * 0.12, colour)
        out[i] = colour
    return out


def render_ict_batch(params_list: Sequence[FaceParams], size: int = 64, **options: Any) -> np.ndarray:
    """Render faces with the ICT model -> uint8 (N, size, size)[, 3]; ``options`` (``rgb``, ``backgrounds``,
    ``supersample``) as for ``surrogate.render.render_batch``, which rasterises and composites them."""
    return render_batch(params_list, size, shader=_render_linear, **options)


def _render_linear(params_list: Sequence[FaceParams], size: int, channels: int) -> np.ndarray:
    """Shaded faces as float (B, size, size, C) in 0..1 with NaN where no surface was hit."""
    model = ict_model_reduced() if size <= LOD_MAX_PIXELS else ict_model()
    screen, normals = project(model, params_list, size)
    pixel, b, t, bary = rasterize(screen, model.triangles, size)
    n_batch, n_vertices = normals.shape[:2]
    width = 5 + channels
    attributes = np.empty((n_batch, n_vertices, width), np.float32)
    attributes[..., :3] = normals
    attributes[..., 3] = model.materials[:, _M["specular"]]
    attributes[..., 4] = 1.0 - 0.5 * model.materials[:, _M["cavity"]]
    attributes[..., 5:] = vertex_albedo(model, params_list, channels)
    corners = attributes.reshape(-1, width)[b[:, None] * n_vertices + model.triangles[t]]  # (P, 3, W)
    values = corners[:, 0] * bary[:, :1] + corners[:, 1] * bary[:, 1:2] + corners[:, 2] * bary[:, 2:]
    normal, specular, occlusion, albedo = values[:, :3], values[:, 3], values[:, 4], values[:, 5:]
    normal = normal / np.maximum(np.sqrt((normal * normal).sum(axis=1)), 1e-12)[:, None]
    light = np.stack([light_direction(p) for p in params_list])[b]
    ambient = np.array([p.ambient for p in params_list], np.float32)[b]
    strength = np.array([p.light_strength for p in params_list], np.float32)[b]
    cosine = (normal * light).sum(axis=1)
    shade = ambient * occlusion + strength * np.maximum(cosine, 0.0)
    # Blinn-Phong highlight (viewer along +z): a glint in the eyes and a sheen on nose, brow and lips.
    half = light + np.array([0.0, 0.0, 1.0], np.float32)
    half /= np.maximum(np.linalg.norm(half, axis=1), 1e-12)[:, None]
    spec = 0.35 * specular * strength * np.maximum((normal * half).sum(axis=1), 0.0) ** 24
    image = np.full((n_batch * size * size, channels), np.nan, dtype=np.float32)
    image[pixel] = albedo * shade[:, None] + spec[:, None]
    return image.reshape(n_batch, size, size, channels)
