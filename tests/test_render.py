"""The renderer: determinism, framing, the Haar face detector, AU locality in pixels, mirror symmetry."""

from __future__ import annotations

import numpy as np
import pytest

from surrogate.face_model import EYE_ROW, EYE_Y, N_IDENTITY, PIXELS_PER_UNIT, SUPPORTED_AUS, FaceParams
from surrogate.render import DEFAULT_BACKGROUND, render, render_batch
from surrogate.schema import DEFAULT_SCHEMA
from surrogate.synthesis_3d import render_surrogates_3d


def _random_frontal(rng: np.random.Generator) -> FaceParams:
    return FaceParams(
        yaw=float(rng.uniform(-10, 10)), pitch=float(rng.uniform(-10, 10)), roll=float(rng.uniform(-5, 5)),
        identity=rng.standard_normal(N_IDENTITY).astype(np.float32), gender=float(rng.uniform()),
        skin=float(rng.uniform()), hair=float(rng.uniform()),
    )


def test_shapes_dtypes_and_sizes():
    grey = render(FaceParams())
    assert grey.shape == (64, 64) and grey.dtype == np.uint8
    colour = render(FaceParams(), 48, rgb=True)
    assert colour.shape == (48, 48, 3) and colour.dtype == np.uint8
    assert render_batch([FaceParams()] * 3, 32).shape == (3, 32, 32)
    assert render_batch([], 32).shape == (0, 32, 32)
    assert grey[0, 0] == round(DEFAULT_BACKGROUND * 255)  # corner is background
    assert grey[32, 32] != grey[0, 0]  # centre is face


def test_same_parameters_give_identical_pixels_in_and_out_of_batches():
    rng = np.random.default_rng(1)
    params = [_random_frontal(rng) for _ in range(5)]
    batch = render_batch(params, 64)
    again = render_batch(params, 64)
    np.testing.assert_array_equal(batch, again)
    np.testing.assert_array_equal(render(params[3]), batch[3])


def test_backgrounds_levels_images_and_errors():
    level = render(FaceParams(), 32, background=0.0)
    assert level[0, 0] == 0
    texture = np.tile(np.arange(32, dtype=np.uint8)[None, :] * 8, (32, 1))
    textured = render(FaceParams(), 32, background=texture)
    assert textured[0, 5] == texture[0, 5]
    with pytest.raises(ValueError, match="shape"):
        render(FaceParams(), 32, background=np.zeros((10, 10)))
    with pytest.raises(ValueError, match="grey level"):
        render(FaceParams(), 32, background=2.0)
    with pytest.raises(ValueError, match="size"):
        render(FaceParams(), 4)
    with pytest.raises(TypeError):
        render_batch([{"yaw": 0}], 32)


def test_framing_puts_the_eyes_and_mouth_where_documented():
    size = 128
    face = render(FaceParams(), size).astype(float)
    eye_row = int(EYE_ROW * size)
    # The eye band (dark lashes, iris) is darker than the cheek band below it.
    cheek_row = int((EYE_ROW + PIXELS_PER_UNIT * 0.3) * size)
    centre = slice(int(0.25 * size), int(0.75 * size))
    assert face[eye_row - 2:eye_row + 3, centre].mean() < face[cheek_row - 2:cheek_row + 3, centre].mean()
    assert pytest.approx(0.02) == EYE_Y


def test_haar_cascade_finds_random_frontal_faces():
    """A detector nobody here wrote must see faces: >= 90 % of random frontal identities at 128 px."""
    cv2 = pytest.importorskip("cv2")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    assert not cascade.empty()
    rng = np.random.default_rng(2024)
    images = render_batch([_random_frontal(rng) for _ in range(60)], 128)
    found = [len(cascade.detectMultiScale(im, scaleFactor=1.1, minNeighbors=3)) > 0 for im in images]
    assert np.mean(found) >= 0.9, f"Haar detection rate {np.mean(found):.2f}"


# Regions of the frontal face in canonical head units: (x range of |x|, y range).
REGIONS = {
    "forehead": ((0.0, 0.35), (0.33, 0.6)),
    "brows": ((0.05, 0.5), (0.12, 0.3)),
    "eyes": ((0.15, 0.45), (-0.06, 0.09)),
    "cheeks": ((0.28, 0.55), (-0.42, -0.12)),
    "mouth": ((0.0, 0.3), (-0.72, -0.46)),
    "chin": ((0.0, 0.25), (-0.97, -0.78)),
}


def _region_masks(size: int) -> dict[str, np.ndarray]:
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    x = (cols / size - 0.5) / PIXELS_PER_UNIT
    y = EYE_Y - (rows / size - EYE_ROW) / PIXELS_PER_UNIT
    return {name: (np.abs(x) >= x0) & (np.abs(x) <= x1) & (y >= y0) & (y <= y1)
            for name, ((x0, x1), (y0, y1)) in REGIONS.items()}


# AU -> (regions it must change, regions it must leave alone)
AU_REGIONS = {
    "AU04": ({"brows"}, {"mouth", "chin", "cheeks"}),
    "AU05": ({"eyes"}, {"mouth", "chin", "forehead", "cheeks"}),
    "AU06": ({"cheeks", "eyes"}, {"forehead", "chin", "brows"}),
    "AU07": ({"eyes"}, {"mouth", "chin", "forehead", "cheeks"}),
    "AU12": ({"mouth"}, {"forehead", "brows", "eyes", "chin"}),
    "AU23": ({"mouth"}, {"forehead", "brows", "eyes", "cheeks"}),
    "AU01": ({"brows"}, {"mouth", "chin", "cheeks"}),
    "AU02": ({"brows"}, {"mouth", "chin", "cheeks"}),
    "AU15": ({"mouth"}, {"forehead", "brows", "eyes"}),
    "AU17": ({"chin"}, {"forehead", "brows", "eyes"}),
    "AU26": ({"mouth", "chin"}, {"forehead", "brows", "eyes"}),
    "AU45": ({"eyes"}, {"mouth", "chin", "forehead"}),
}


def test_each_action_unit_changes_its_own_region_and_not_the_others():
    size = 128
    masks = _region_masks(size)
    aus = list(AU_REGIONS)
    images = render_batch([FaceParams(), *[FaceParams(aus={au: 5.0}) for au in aus]], size).astype(float)
    neutral = images[0]
    report = {}
    for au, image in zip(aus, images[1:], strict=True):
        diff = np.abs(image - neutral)
        change = {name: float(diff[mask].mean()) for name, mask in masks.items()}
        report[au] = change
        own, others = AU_REGIONS[au]
        assert max(change[r] for r in own) > 2.0, (au, change)
        for region in others:
            # "not moved" = less than 0.4 grey levels on average and far below the own region
            assert change[region] < 0.4 and change[region] < 0.1 * max(change[r] for r in own), (au, region, change)


def test_every_supported_au_changes_the_face():
    images = render_batch([FaceParams(), *[FaceParams(aus={au: 5.0}) for au in SUPPORTED_AUS]], 64)
    for au, image in zip(SUPPORTED_AUS, images[1:], strict=True):
        assert np.abs(image.astype(int) - images[0]).sum() > 200, au


def test_intensity_scales_the_change():
    images = render_batch([FaceParams(), FaceParams(aus={"AU12": 2.0}), FaceParams(aus={"AU12": 5.0})], 128)
    small = np.abs(images[1].astype(int) - images[0]).sum()
    large = np.abs(images[2].astype(int) - images[0]).sum()
    assert 0 < small < large


def test_yaw_plus_and_minus_thirty_mirror_each_other():
    """The mesh, its bases and the texture are exactly left-right symmetric and the light comes from
    the camera, so +30 deg is the mirror image of -30 deg. The tolerance covers float rounding in the
    two rotations, which can flip a pixel centre lying on a triangle edge to the neighbouring triangle."""
    rng = np.random.default_rng(7)
    for _ in range(2):
        base = _random_frontal(rng)
        kwargs = {k: getattr(base, k) for k in ("identity", "gender", "skin", "hair")}
        left, right = render_batch([FaceParams(yaw=30, **kwargs), FaceParams(yaw=-30, **kwargs)], 64)
        diff = np.abs(left.astype(int) - np.fliplr(right).astype(int))
        assert diff.mean() < 0.5 and np.mean(diff > 8) < 0.01, (diff.mean(), np.mean(diff > 8))
        assert np.abs(left.astype(int) - right).mean() > 5  # and the two poses really differ


def test_light_from_the_image_right_brightens_the_right_half():
    image = render(FaceParams(light_azimuth=60, ambient=0.2), 64).astype(float)
    assert image[20:50, 34:50].mean() > image[20:50, 14:30].mean() + 10


def test_gender_axis_changes_the_face():
    female, male = render_batch([FaceParams(gender=0.0), FaceParams(gender=1.0)], 64)
    assert np.abs(female.astype(int) - male).mean() > 3


def test_3d_surrogates_take_no_identity_and_depend_only_on_attributes_and_seed():
    import inspect

    parameters = set(inspect.signature(render_surrogates_3d).parameters)
    assert parameters == {"schema", "values", "seeds", "size", "rgb", "model"}  # model: which face model draws
    # Two different source people with equal measured attributes: the surrogate cannot tell them apart.
    attributes_person_a = np.array([[5.0, -2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 4.0, 0.0, 0.2]], np.float32)
    attributes_person_b = attributes_person_a.copy()
    a = render_surrogates_3d(DEFAULT_SCHEMA, attributes_person_a, [11])
    b = render_surrogates_3d(DEFAULT_SCHEMA, attributes_person_b, [11])
    np.testing.assert_array_equal(a, b)
    other_seed = render_surrogates_3d(DEFAULT_SCHEMA, attributes_person_a, [12])
    assert np.abs(other_seed.astype(int) - a).mean() > 1
    rgb = render_surrogates_3d(DEFAULT_SCHEMA, np.repeat(attributes_person_a, 2, 0), [1, 2], size=32, rgb=True)
    assert rgb.shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match="seeds"):
        render_surrogates_3d(DEFAULT_SCHEMA, attributes_person_a, [1, 2])
    with pytest.raises(ValueError, match="shape"):
        render_surrogates_3d(DEFAULT_SCHEMA, np.zeros((1, 3)), [1])


def test_off_screen_faces_and_supersampling():
    gone = render(FaceParams(shift_x=3.0), 32, background=0.5)
    assert np.all(gone == 128)
    smooth = render(FaceParams(), 64, supersample=2)
    plain = render(FaceParams(), 64)
    assert smooth.shape == plain.shape and 0 < np.abs(smooth.astype(int) - plain).mean() < 8
    with pytest.raises(ValueError, match="supersample"):
        render(FaceParams(), 64, supersample=5)


def test_renderer_and_core_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, surrogate.render, surrogate.training_data, surrogate.sheet, surrogate.synthesis_3d; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
