"""The ICT-FaceKit face model of the 3-D path: data, framing, AUs, pose, gender, reduced mesh, surrogates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from surrogate import ict_model as im
from surrogate.face_model import EYE_ROW, N_IDENTITY, FaceParams
from surrogate.schema import DEFAULT_SCHEMA
from surrogate.synthesis_3d import model_version, render_surrogates_3d

SIZE = 64


def landmarks_px(params: FaceParams, size: int = SIZE, model: im.IctModel | None = None) -> np.ndarray:
    """(68, 2) pixel positions (x right, y down) of the iBUG-68 landmark vertices."""
    model = model or im.ict_model()
    screen, _ = im.project(model, [params], size)
    return screen[0, model.landmarks, :2]


def test_committed_kit_is_small_and_keeps_its_licence() -> None:
    folder = im.ICT_DATA_DIR
    assert (folder / "ict_face.npz").stat().st_size < 10 * 2**20
    licence = (folder / "LICENSE").read_text()
    assert "MIT License" in licence and "USC Institute for Creative Technologies" in licence


def test_missing_data_names_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(im.ICT_DATA_ENV, str(tmp_path))
    im.ict_model.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match=str(tmp_path)):
            im.ict_model()
    finally:
        monkeypatch.delenv(im.ICT_DATA_ENV)
        im.ict_model.cache_clear()


def test_render_is_deterministic_and_framed_like_the_parametric_model() -> None:
    params = FaceParams(identity=np.linspace(-1, 1, N_IDENTITY), skin=0.3)
    a = im.render_ict_batch([params, params], SIZE)
    assert a.shape == (2, SIZE, SIZE) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[0], a[1])
    assert a[0, 0, 0] == round(im.DEFAULT_BACKGROUND * 255)  # corners are backdrop
    points = landmarks_px(FaceParams())
    eyes = np.stack([points[36:42].mean(0), points[42:48].mean(0)])
    assert abs(eyes[:, 1].mean() - EYE_ROW * SIZE) < 1.5
    assert abs(eyes[:, 0].mean() - SIZE / 2) < 0.5
    assert 0.6 * SIZE < points[8, 1] < 0.98 * SIZE  # the chin is in the frame


def test_lip_colour_covers_the_whole_lip() -> None:
    """Regression: lip vertices past the landmark index range were once left skin-coloured (pale stripes)."""
    model = im.ict_model()
    with np.load(im.ICT_DATA_DIR / "ict_face.npz") as kit:
        neutral, lm = kit["neutral"], kit["neutral"][kit["landmarks"]]
    x, y, z = neutral[:, 0], neutral[:, 1], neutral[:, 2]
    inner = (np.abs(x) < 1.0) & (y < lm[51, 1] - 0.15) & (y > lm[57, 1] + 0.15) & (z > lm[62, 2] - 0.3)
    inner &= np.abs(y - lm[[62, 66], 1].mean()) > 0.25  # not the dark line between the lips
    assert inner.sum() > 30
    assert model.materials[np.flatnonzero(inner), im.MATERIALS.index("lip")].min() > 0.5


def _region_change(au: str, points: tuple[int, ...]) -> tuple[float, float]:
    """Mean |change| of an AU at 5 inside the box around the given landmarks (+2 px) and outside it."""
    neutral, active = im.render_ict_batch([FaceParams(), FaceParams(aus={au: 5.0})], SIZE).astype(np.float32)
    diff = np.abs(active - neutral)
    p = landmarks_px(FaceParams())[list(points)]
    x0, y0 = np.floor(p.min(0) - 2).astype(int)
    x1, y1 = np.ceil(p.max(0) + 2).astype(int)
    mask = np.zeros_like(diff, bool)
    mask[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = True
    return float(diff[mask].mean()), float(diff[~mask].mean())


@pytest.mark.parametrize(("au", "points"), [
    ("AU04", tuple(range(17, 27))),
    ("AU05", tuple(range(36, 48))),
    ("AU07", tuple(range(36, 48))),
    ("AU06", (1, 2, 14, 15, 17, 26, 48, 54)),  # cheeks: between the brows and the mouth corners
    ("AU12", tuple(range(48, 68))),
    ("AU23", tuple(range(48, 68))),
])
def test_each_paper_au_changes_its_own_region(au: str, points: tuple[int, ...]) -> None:
    inside, outside = _region_change(au, points)
    assert inside > 2.0, f"{au} barely changes its region ({inside:.2f} grey levels)"
    assert inside > 4 * outside, f"{au} changes the rest of the face too ({inside:.2f} vs {outside:.2f})"


def test_intensity_curve_is_monotone_and_zero_at_rest() -> None:
    model = im.ict_model()
    col = len(model.gender_direction) + 1 + list(im.SUPPORTED_AUS).index("AU12")
    weights = [model.coefficients(FaceParams(aus={"AU12": v}))[col] for v in (0.0, 1.0, 2.5, 5.0)]
    assert weights[0] == 0.0 and all(a < b for a, b in zip(weights, weights[1:], strict=False))


def test_a_cheek_raise_the_squint_and_smile_imply_is_not_drawn_again() -> None:
    from surrogate.landmarks import implied_au06

    model = im.ict_model()
    col = len(model.gender_direction) + 1 + list(im.SUPPORTED_AUS).index("AU06")
    implied = float(implied_au06(3.0, 4.0))
    assert 2.5 < implied < 4.5  # what the project's readers report for that squint and smile
    duchenne = {"AU07": 3.0, "AU12": 4.0}
    assert model.coefficients(FaceParams(aus=duchenne | {"AU06": implied}))[col] == 0.0
    assert model.coefficients(FaceParams(aus=duchenne))[col] == 0.0
    beyond = model.coefficients(FaceParams(aus=duchenne | {"AU06": 5.0}))[col]
    alone = model.coefficients(FaceParams(aus={"AU06": 5.0 - implied}))[col]
    assert beyond > 0 and beyond == pytest.approx(alone)  # only the excess is drawn
    # without a squint or a smile the reader implies no cheek raise: AU06 is drawn as requested
    assert model.coefficients(FaceParams(aus={"AU06": 3.0}))[col] == pytest.approx(1.5 * (3.0 / 5.0) ** 0.8)


def test_pose_follows_the_schema_convention() -> None:
    rest = landmarks_px(FaceParams())
    assert landmarks_px(FaceParams(yaw=30))[30, 0] < rest[30, 0] - 3  # nose to the image's left
    assert landmarks_px(FaceParams(pitch=20))[30, 1] > rest[30, 1] + 1  # head down
    rolled = landmarks_px(FaceParams(roll=20))
    assert rolled[42:48, 1].mean() > rolled[36:42, 1].mean() + 3  # crown to the image's right


def test_gender_is_carried_by_shape_and_only_by_the_gender_attribute() -> None:
    model = im.ict_model()
    identity = np.random.default_rng(0).standard_normal(N_IDENTITY)
    male, female = (model.vertices([FaceParams(identity=identity, gender=g)])[0] for g in (1.0, 0.0))
    features = im._gender_features(male, model.landmarks) - im._gender_features(female, model.landmarks)
    targets = np.array(list(im.GENDER_TARGETS_CM.values()))
    assert np.all(np.sign(features) == np.sign(targets))  # head units, so only the signs
    # An identity's own component along the gender direction is removed: it cannot fake a gender.
    shifted = identity + 3.0 * model.gender_direction
    np.testing.assert_allclose(model.vertices([FaceParams(identity=shifted)]),
                               model.vertices([FaceParams(identity=identity)]), atol=1e-5)


def test_reduced_mesh_draws_the_same_face_at_64_px() -> None:
    full, reduced = im.ict_model(), im.ict_model_reduced()
    assert reduced.n_vertices < 0.6 * full.n_vertices
    params = [FaceParams(aus={"AU12": 4.0, "AU04": 3.0}, yaw=20.0), FaceParams(gender=1.0, pitch=-15.0)]
    drawn = {}
    for name, model in (("full", full), ("reduced", reduced)):
        screen, normals = im.project(model, params, SIZE)
        drawn[name] = screen[:, model.landmarks, :2]
    # Landmarks are kept vertices or their cluster's nearest: within a pixel of the full mesh's.
    assert np.abs(drawn["full"] - drawn["reduced"]).max() < 1.5
    # The openings (lids, lips) survive whole: every protected vertex is kept.
    assert reduced.protected.sum() == full.protected.sum()


def test_surrogates_3d_with_the_ict_model() -> None:
    values = np.zeros((3, len(DEFAULT_SCHEMA)), np.float32)
    values[:, DEFAULT_SCHEMA.index("AU12")] = 3.0
    a = render_surrogates_3d(DEFAULT_SCHEMA, values, [1, 1, 2], model="ict")
    b = render_surrogates_3d(DEFAULT_SCHEMA, values[:1], [1], model="ict")
    np.testing.assert_array_equal(a[0], a[1])
    np.testing.assert_array_equal(a[0], b[0])
    assert np.abs(a[0].astype(int) - a[2]).mean() > 2  # another seed, another person and backdrop
    default = render_surrogates_3d(DEFAULT_SCHEMA, values[:1], [1])
    np.testing.assert_array_equal(default[0], a[0])  # the default face model since version 6
    old = render_surrogates_3d(DEFAULT_SCHEMA, values[:1], [1], model="parametric")
    assert np.abs(old[0].astype(int) - a[0]).mean() > 5  # the parametric model stays selectable
    assert model_version("ict") == model_version() == (im.FACE_MODEL_ICT, im.ICT_MODEL_VERSION)
    with pytest.raises(ValueError, match="face_model"):
        render_surrogates_3d(DEFAULT_SCHEMA, values, [1, 2, 3], model="ict2")


def test_haar_cascade_finds_random_frontal_faces() -> None:
    """A detector nobody here wrote must see faces: >= 95 % of random frontal identities at 128 px."""
    cv2 = pytest.importorskip("cv2")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    rng = np.random.default_rng(2024)
    params = [FaceParams(yaw=float(rng.uniform(-10, 10)), pitch=float(rng.uniform(-10, 10)),
                         roll=float(rng.uniform(-5, 5)), identity=rng.standard_normal(N_IDENTITY),
                         gender=float(rng.uniform()), skin=float(rng.uniform()), hair=float(rng.uniform()))
              for _ in range(60)]
    images = im.render_ict_batch(params, 128)
    found = [len(cascade.detectMultiScale(image, scaleFactor=1.1, minNeighbors=3)) > 0 for image in images]
    assert np.mean(found) >= 0.95, f"Haar detection rate {np.mean(found):.2f}"


def test_long_hair_for_women_only_and_nearly_free_when_tucked() -> None:
    model = im.ict_model()
    assert im.long_hair(0.1) == 1.0 and im.long_hair(0.6) == 0.0 and 0.0 < im.long_hair(0.42) < 1.0
    sheet = np.abs(model.basis[-1].reshape(-1, 3)).sum(axis=1) > 0  # what the long-hair row moves
    tucked, out = (model.vertices([FaceParams(gender=g)])[0][sheet] for g in (0.8, 0.0))
    # Tucked, the sheet shrinks to a small crumple inside the skull (it still follows identity and gender).
    assert np.ptp(tucked, axis=0).max() < 0.15 * np.ptp(out, axis=0).max()
    woman, man = im.render_ict_batch([FaceParams(gender=0.0), FaceParams(gender=0.8)], SIZE).astype(int)
    beside_neck = (slice(int(0.75 * SIZE), SIZE), slice(0, int(0.15 * SIZE)))
    assert np.abs(woman[beside_neck] - man[beside_neck]).mean() > 20  # hair, not backdrop




def _eye_pixels(params: FaceParams, size: int = 256) -> tuple[float, int]:
    """Of the subject's right eye as drawn: the iris's share of the visible eyeball, and the pixels of
    bare sclera above the iris in its centre columns."""
    from surrogate.render import rasterize

    model = im.ict_model()
    screen, _ = im.project(model, [params], size)
    pixel, _, t, bary = rasterize(screen, model.triangles, size)
    corners = model.materials[model.triangles[t]]  # (P, 3, materials)
    eyeball = corners[:, :, im.MATERIALS.index("sclera")].min(axis=1) > 0.99
    iris = (corners[:, :, im.MATERIALS.index("iris")] * bary).sum(axis=1) > 0.5
    y, x = np.divmod(pixel, size)
    right = eyeball & (x < size // 2)
    column = right & (np.abs(x - np.median(x[right & iris])) <= 1)
    above = int((column & ~iris & (y < y[column & iris].min())).sum())
    return float((right & iris).sum() / right.sum()), above


def test_resting_eye_is_mostly_iris_and_au05_bares_the_sclera_above_it() -> None:
    """Version 1's iris filled 65 % of the open eye (with a brighter sclera) and MediaPipe read resting
    faces as wide-eyed; the lids now cover the iris's top and bottom and it fills most of the opening."""
    share, above = _eye_pixels(FaceParams())
    assert share > 0.75 and above == 0
    wide_share, wide_above = _eye_pixels(FaceParams(aus={"AU05": 5.0}))
    assert wide_above >= 6 and wide_share < share
