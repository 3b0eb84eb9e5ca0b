"""The parametric face model: API, validation, symmetry, pose sign conventions, AU locality."""

from __future__ import annotations

import numpy as np
import pytest

from surrogate.face_model import (
    EYE_X,
    EYE_Y,
    MOUTH_Y,
    N_IDENTITY,
    SUPPORTED_AUS,
    FaceParams,
    face_model,
    params_from_attributes,
    rotation_matrix,
)
from surrogate.schema import DEFAULT_SCHEMA, OPENFACE_AU_NAMES, PAPER_AUS, AttributeSchema


def test_supports_the_paper_aus_and_every_openface_intensity_au():
    assert set(PAPER_AUS) <= set(SUPPORTED_AUS)
    assert set(OPENFACE_AU_NAMES) == set(SUPPORTED_AUS)
    assert isinstance(N_IDENTITY, int) and N_IDENTITY >= 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"aus": {"AU99": 1.0}}, "unsupported action unit"),
        ({"aus": {"AU12": 6.0}}, "AU12"),
        ({"aus": {"AU12": float("nan")}}, "AU12"),
        ({"gender": 1.5}, "gender"),
        ({"identity": np.zeros(3)}, "identity"),
        ({"yaw": float("inf")}, "yaw"),
        ({"scale": 0.0}, "scale"),
    ],
)
def test_face_params_reject_bad_values_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FaceParams(**kwargs)


def test_params_from_attributes_maps_pose_aus_gender_and_scene():
    row = np.array([10, -5, 3, 1, 2, 3, 4, 5, 0, 0.9], dtype=np.float32)
    params = params_from_attributes(DEFAULT_SCHEMA, row, skin=0.2, light_azimuth=15.0)
    assert (params.yaw, params.pitch, params.roll) == (10.0, -5.0, 3.0)
    assert params.aus == {"AU04": 1.0, "AU05": 2.0, "AU06": 3.0, "AU07": 4.0, "AU12": 5.0, "AU23": 0.0}
    assert params.gender == pytest.approx(0.9)
    assert params.skin == 0.2 and params.light_azimuth == 15.0


def test_params_from_attributes_clips_overshoot_and_checks_length():
    schema = AttributeSchema.from_names(["yaw", "AU12"])
    params = params_from_attributes(schema, np.array([75.0, 5.3]))
    assert params.yaw == 60.0 and params.aus["AU12"] == 5.0
    with pytest.raises(ValueError, match="needs 2"):
        params_from_attributes(schema, np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="not finite"):
        params_from_attributes(schema, np.array([np.nan, 1.0]))


def _mirror_index():
    model = face_model()
    mirror = np.arange(model.n_vertices)
    for first, rows, cols, *_ in model.grids:
        idx = np.arange(rows * cols).reshape(rows, cols) + first
        mirror[idx] = idx[:, ::-1]
    return mirror


def test_mesh_and_every_basis_are_left_right_symmetric():
    model = face_model()
    mirror = _mirror_index()
    flip = np.array([-1.0, 1.0, 1.0], np.float32)
    np.testing.assert_allclose(model.mean[mirror] * flip, model.mean, atol=1e-5)
    fields = [*model.identity_basis, model.gender_axis, *model.au_basis.values()]
    for displacement in fields:
        np.testing.assert_allclose(displacement[mirror] * flip, displacement, atol=1e-5)


def test_mesh_is_a_moderate_size_and_triangles_face_outwards():
    model = face_model()
    assert 1000 < len(model.triangles) < 20000
    v = model.mean[model.triangles]
    normal = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    head = model.triangles[:, 0] < model.grids[1][0]
    centre = v.mean(axis=1)
    area = np.linalg.norm(normal, axis=1)
    proper = area > 1e-8
    outward = np.einsum("ij,ij->i", normal, centre - [0, -0.1, 0])[head & proper] > 0
    assert outward.mean() > 0.97


def _nose_tip(params: FaceParams) -> np.ndarray:
    from surrogate.render import project

    model = face_model()
    tip = np.argmax(model.mean[:, 2])
    screen, _ = project(model, [params], 100)
    return screen[0, tip]


def test_pose_sign_conventions_follow_the_schema():
    neutral = _nose_tip(FaceParams())
    assert _nose_tip(FaceParams(yaw=30))[0] < neutral[0] - 5  # yaw > 0: nose to the image's left
    assert _nose_tip(FaceParams(pitch=20))[1] > neutral[1] + 3  # pitch > 0: nose down (image y grows)
    model = face_model()
    crown = np.argmax(model.mean[:, 1])
    r = rotation_matrix(0, 0, 20)
    assert (r @ model.mean[crown])[0] > 0.2  # roll > 0: the top of the head to the image's right
    np.testing.assert_allclose(rotation_matrix(10, 20, 30) @ rotation_matrix(10, 20, 30).T, np.eye(3), atol=1e-6)


def test_each_action_unit_moves_vertices_in_its_own_region():
    model = face_model()
    canon = model.canonical
    expected = {  # AU -> (canonical centre of the largest movement, tolerance radius)
        "AU01": ((0.12, 0.2), 0.2), "AU02": ((0.42, 0.2), 0.2), "AU04": ((0.2, 0.19), 0.25),
        "AU06": ((0.33, -0.22), 0.15), "AU09": ((0.0, -0.15), 0.2), "AU12": ((0.21, MOUTH_Y), 0.12),
        "AU15": ((0.21, MOUTH_Y), 0.12), "AU20": ((0.21, MOUTH_Y), 0.12), "AU26": ((0.0, -0.85), 0.35),
        "AU05": ((EYE_X, EYE_Y + 0.05), 0.1), "AU17": ((0.0, -0.8), 0.15), "AU23": ((0.2, MOUTH_Y), 0.2),
    }
    for au, ((cx, cy), radius) in expected.items():
        moved = np.linalg.norm(model.au_basis[au], axis=1)
        top = canon[moved > 0.7 * moved.max()]
        centre = np.array([np.abs(top[:, 0]).mean(), top[:, 1].mean()])
        assert np.hypot(centre[0] - cx, centre[1] - cy) < radius, (au, centre)
        # nothing at the other end of the face moves
        far = np.hypot(np.abs(canon[:, 0]) - cx, canon[:, 1] - cy) > 0.6
        assert moved[far].max() < 0.15 * moved.max(), au


def test_vertices_are_linear_in_the_coefficients():
    model = face_model()
    ident = np.random.default_rng(0).standard_normal(N_IDENTITY).astype(np.float32)
    a, b, both = model.vertices([FaceParams(identity=ident), FaceParams(aus={"AU12": 5}),
                                 FaceParams(identity=ident, aus={"AU12": 5})])
    np.testing.assert_allclose(both - model.mean, (a - model.mean) + (b - model.mean), atol=1e-5)
