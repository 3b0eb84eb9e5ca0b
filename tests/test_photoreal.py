"""The photoreal method: the calibrated edit, identity from the seed, attributes only, framing and roll."""

from __future__ import annotations

import numpy as np
import pytest

from surrogate.landmarks import FaceReading
from surrogate.photoreal import CALIBRATION_FILE, MODELS_DIR, Calibration, step_limits
from surrogate.schema import DEFAULT_SCHEMA


def test_calibrated_target_inverts_the_fitted_gain_and_clips_the_step() -> None:
    names = ("yaw", "AU12")
    calibration = Calibration(names, np.array([1.0, 0.5], np.float32), np.array([0.5, 0.2], np.float32),
                              np.array([0.3, 0.4], np.float32), np.array([100.0, 2.0], np.float32))
    predicted = np.array([[4.0, 1.0]], np.float32)
    requested = np.array([[10.0, 2.0]], np.float32)
    target = calibration.target(requested, predicted)
    # the yaw step is within its limit: the fitted model then reads exactly what was requested
    assert np.isclose(calibration.a[0] + calibration.b[0] * predicted[0, 0] + calibration.c[0] * target[0, 0], 10.0)
    # AU12 would need (2 - 0.5 - 0.2) / 0.4 - 1 = 2.25 read-out units: clipped to its limit of 2
    assert np.isclose(target[0, 1], predicted[0, 1] + 2.0)


def test_refinement_gains_default_to_the_edit_gains_and_round_trip() -> None:
    names = ("yaw", "AU12")
    base = {"yaw": {"a": 0.0, "b": 0.7, "c": 0.25, "limit": 120.0},
            "AU12": {"a": -1.0, "b": 0.7, "c": 0.8, "limit": 9.0}}
    plain = Calibration.from_dict(base, names)
    assert plain.step is None and np.array_equal(plain.step_gain, plain.c)
    stepped = Calibration.from_dict({n: {**v, "step": 2 * v["c"]} for n, v in base.items()}, names)
    assert np.allclose(stepped.step_gain, 2 * plain.c)
    assert Calibration.from_dict(stepped.to_dict(), names).to_dict() == stepped.to_dict()
    with pytest.raises(ValueError, match="positive"):
        Calibration.from_dict({n: {**v, "step": 0.0} for n, v in base.items()}, names)


def test_shipped_calibration_covers_every_direction() -> None:
    from surrogate.portrait_directions import AttributeDirections

    names = AttributeDirections.load(MODELS_DIR / "directions.npz").names
    calibration = Calibration.load(MODELS_DIR / CALIBRATION_FILE, names)
    assert np.all(calibration.c > 0) and np.all(calibration.limit > 0)
    # the shipped step limits are the rule's (the uncalibrated backend uses the same)
    assert np.allclose(calibration.limit, step_limits(AttributeDirections.load(MODELS_DIR / "directions.npz")))
    with pytest.raises(ValueError, match="no entry"):
        Calibration.from_dict({}, names)


def test_shipped_routes_send_pose_to_the_coarse_layers_and_each_expression_to_its_few_channels() -> None:
    import json

    from surrogate.photoreal import EXPRESSION_CHANNELS, POSE_LAYERS, ROUTED_POSE, STYLE_ROUTES_FILE, StyleRoutes
    from surrogate.portrait_directions import AttributeDirections

    names = AttributeDirections.load(MODELS_DIR / "directions.npz").names
    routes = StyleRoutes.load(MODELS_DIR / STYLE_ROUTES_FILE, names)
    with np.load(MODELS_DIR / STYLE_ROUTES_FILE) as data:
        stops = json.loads(str(data["info"]))["layer_stops"]
    assert routes.offsets.shape == (len(names), stops[-1])
    coarse = stops[POSE_LAYERS[1]]  # the first channel after the pose layers
    for k, name in enumerate(names):
        nonzero = np.flatnonzero(routes.offsets[k])
        if name in ROUTED_POSE:
            assert nonzero.max() < coarse and len(nonzero) > 0.9 * coarse
        elif name in EXPRESSION_CHANNELS:
            assert len(nonzero) == EXPRESSION_CHANNELS[name][0]
        else:
            assert len(nonzero) == 0, name  # gender and the brow keep their steps in w
    assert routes.routed.tolist() == [name in ROUTED_POSE or name in EXPRESSION_CHANNELS for name in names]
    assert "gender" in names and not routes.routed[names.index("gender")]
    with pytest.raises(ValueError, match="routes for"):
        StyleRoutes.load(MODELS_DIR / STYLE_ROUTES_FILE, names[::-1])


openvino = pytest.importorskip("openvino", reason="the portraits extra (openvino) is not installed")


@pytest.fixture(scope="module")
def backend():
    from surrogate.synthesis import photoreal_backend

    return photoreal_backend()


def row(**values: float) -> np.ndarray:
    neutral = {"yaw": 0.0, "pitch": 0.0, "roll": 0.0, "AU04": 0.5, "AU05": 0.2, "AU06": 2.0, "AU07": 2.0,
               "AU12": 2.0, "AU23": 0.5, "gender": 0.5}
    return np.array([[{**neutral, **values}[n] for n in DEFAULT_SCHEMA.names]], np.float32)


def test_edit_comes_from_the_attributes_and_the_person_from_the_seed(backend) -> None:
    from surrogate.portraits import z_for_seeds
    from surrogate.runtime import generator_noise

    assert backend.gan.noise == "portrait"
    z = generator_noise([3, 3, 4], backend.gan)
    assert np.array_equal(z, z_for_seeds([3, 3, 4]))
    values = np.concatenate([row(AU12=0.5), row(AU12=4.5), row(AU12=4.5)])
    w = backend.latents(values, z)
    generator = backend.generator
    w0 = backend.base_latents(z)
    assert np.allclose(w0, generator.w_avg + np.float32(generator.psi) * (generator.map(z) - generator.w_avg))
    directions = backend.directions
    # the change of w lies in the span of the directions: nothing but the attributes moves the face
    change = (w - w0).astype(np.float64)
    basis = directions.vectors.T.astype(np.float64)
    coefficients = np.linalg.lstsq(basis, change.T, rcond=None)[0]
    residual = change.T - basis @ coefficients
    assert np.abs(residual).max() < 1e-3 * max(1.0, np.abs(change).max())
    # and the read-out of the edited w is the calibrated target of the requested attributes
    requested = backend.requested(values)
    expected = backend.calibration.target(requested, directions.predict(w0))
    assert np.allclose(directions.predict(w), expected, atol=1e-2)
    smile = directions.names.index("AU12")
    assert directions.predict(w)[1, smile] > directions.predict(w)[0, smile] + 1.0
    # a row alone gives the same w as in a batch with others
    assert np.array_equal(backend.latents(values[2:], z[2:]), w[2:])


def test_an_edit_longer_than_the_budget_is_shortened_along_itself(backend) -> None:
    from surrogate.photoreal import EDIT_BUDGET, PhotorealBackend
    from surrogate.portraits import z_for_seeds

    assert backend.edit_budget == EDIT_BUDGET and backend.gan.metadata["edit_budget"] == EDIT_BUDGET
    w0 = backend.base_latents(z_for_seeds([5, 6]))
    predicted = backend.directions.predict(w0)
    targets = predicted.copy()
    targets[0, backend.directions.names.index("AU12")] += 0.5  # a short edit
    targets[1, backend.directions.names.index("yaw")] += 200.0  # far beyond the budget
    unlimited = backend.directions.edit(w0, targets)
    w = backend.edit(w0, targets)
    assert np.allclose(w[0], unlimited[0]) and np.linalg.norm(unlimited[0] - w0[0]) < EDIT_BUDGET
    assert np.isclose(np.linalg.norm(w[1] - w0[1]), EDIT_BUDGET, rtol=1e-4)
    short, long = w[1] - w0[1], unlimited[1] - w0[1]
    assert short @ long / np.linalg.norm(short) / np.linalg.norm(long) > 0.9999
    free = PhotorealBackend(edit_budget=None)
    assert np.allclose(free.edit(w0, targets), unlimited, atol=1e-5)
    with pytest.raises(ValueError, match="edit_budget"):
        PhotorealBackend(edit_budget=0.0)


def test_routed_steps_reach_the_network_as_style_offsets_and_gender_through_w(backend) -> None:
    from surrogate.photoreal import EXPRESSION_CHANNELS, ROUTED_POSE, PhotorealBackend
    from surrogate.portraits import z_for_seeds

    names, vectors = backend.directions.names, backend.directions.vectors
    smile, gender = names.index("AU12"), names.index("gender")
    assert backend.gan.metadata["routed"] == [n for n in names if n in ROUTED_POSE or n in EXPRESSION_CHANNELS]
    w0 = backend.base_latents(z_for_seeds([7]))
    predicted = backend.directions.predict(w0)
    smiling = predicted.copy()
    smiling[0, smile] += 1.0
    w, offset = backend.render_inputs(w0, smiling)
    assert np.array_equal(w, w0)  # the smile does not move w: it goes to its few style channels
    assert np.allclose(offset[0], backend.routes.offsets[smile], atol=1e-5)
    # the read-out still describes the whole edit (the calibration's model): w0 moved along the smile
    assert np.allclose(backend.edit(w0, smiling) - w0, vectors[smile][None], atol=1e-4)
    male = predicted.copy()
    male[0, gender] += 0.3
    w, offset = backend.render_inputs(w0, male)
    assert not np.any(offset) and np.allclose(w - w0, 0.3 * vectors[gender][None], atol=1e-4)
    # without routes (versions 1-5) every step moves w
    plain_w, plain_offset = PhotorealBackend(routed=False).render_inputs(w0, smiling)
    assert plain_offset is None and np.allclose(plain_w - w0, vectors[smile][None], atol=1e-4)
    # the graph's offset input is wired: a zero offset gives the network's own pixels, the smile's offset others
    generator = backend.generator
    unedited = generator.render(w0, side=128)
    assert np.array_equal(unedited, generator.render(w0, side=128, offset=np.zeros_like(offset)))
    smiled = generator.render(w0, side=128, offset=3.0 * backend.routes.offsets[smile][None])
    assert np.abs(smiled.astype(int) - unedited).mean() > 1.0


def test_yaw_beyond_what_the_generator_turns_is_rendered_at_the_limit(backend) -> None:
    from surrogate.photoreal import MAX_YAW

    yaw = backend.directions.names.index("yaw")
    requested = backend.requested(np.concatenate([row(yaw=-60.0), row(yaw=20.0), row(yaw=50.0)]))
    assert requested[:, yaw].tolist() == [-MAX_YAW, 20.0, MAX_YAW]
    assert backend.gan.metadata["max_yaw"] == MAX_YAW


class Reading:
    """What the refinement uses of a MediaPipe reading: the pose and the AU intensities."""

    def __init__(self, **values: float) -> None:
        self.values = values

    def attributes(self) -> dict[str, float]:
        return dict(self.values)

    array = FaceReading.array


def test_a_refinement_round_moves_each_target_by_its_residual_over_the_gain(backend) -> None:
    from surrogate.portraits import z_for_seeds

    names = backend.directions.names
    w0 = backend.base_latents(z_for_seeds([5]))
    requested = backend.requested(row(yaw=10.0, AU12=3.0, gender=0.9))
    targets = backend.targets(requested, w0)
    read = dict(zip(names, requested[0].tolist(), strict=True))
    read.update(yaw=6.0, AU12=2.0)  # MediaPipe read less turn and less smile than requested; the rest as asked
    reading = Reading(**{k: v for k, v in read.items() if k != "gender"}, roll=0.0, AU06=1.0)
    moved = backend.corrected(targets, requested, w0, reading)[0] - targets[0]
    gain, limit = backend.calibration.step_gain, backend.calibration.limit
    step = dict(zip(names, moved.tolist(), strict=True))
    yaw, smile = names.index("yaw"), names.index("AU12")
    assert np.isclose(step["yaw"], min(4.0 / gain[yaw], limit[yaw]), rtol=1e-4)
    assert np.isclose(step["AU12"], min(1.0 / gain[smile], limit[smile]), rtol=1e-4)
    # read as requested: unmoved; gender is not read by MediaPipe: unmoved
    assert all(abs(step[n]) < 1e-4 for n in names if n not in ("yaw", "AU12"))
    # a step never leaves the calibration's limits around w0's read-out
    far = Reading(**{**{k: v for k, v in read.items() if k != "gender"}, "yaw": -200.0}, roll=0.0)
    corrected = backend.corrected(targets, requested, w0, far)[0]
    predicted = backend.directions.predict(w0)[0]
    assert np.isclose(corrected[yaw] - predicted[yaw], limit[yaw], rtol=1e-4)


def test_half_resolution_path_is_the_full_render_averaged_down(backend) -> None:
    from surrogate.portraits import PortraitGenerator

    w = backend.generator.w([8])
    half = backend.generator.render(w)
    full = PortraitGenerator(batch=1).render(w, side=512)
    difference = np.abs(half.astype(int) - full)
    assert half.shape == (1, 512, 512, 3)
    # quantisation before vs after the average, and clipping at 1024 px before it
    assert difference.max() <= 2 and difference.mean() < 0.5, (difference.max(), difference.mean())
    with pytest.raises(ValueError, match="at most 512"):
        backend.generator.render(w, side=1024)


@pytest.mark.slow
def test_surrogates_are_framed_rolled_turned_and_deterministic() -> None:
    pytest.importorskip("mediapipe", reason="the portraits extra (mediapipe) is not installed")
    from surrogate.landmarks import MediaPipeEstimator
    from surrogate.synthesis import photoreal_images, synthesize

    values = np.concatenate([row(), row(roll=20.0), row(yaw=-25.0), row(yaw=25.0)])
    colour = synthesize("photoreal", values, [21, 21, 21, 21], size=256, rgb=True)
    assert colour.shape == (4, 256, 256, 3) and colour.dtype == np.uint8
    reader = MediaPipeEstimator()
    read = reader.predict(colour)
    assert reader.found.all()
    yaw, roll = reader.schema.index("yaw"), reader.schema.index("roll")
    assert 14.0 < read[1, roll] - read[0, roll] < 26.0  # roll is an in-plane rotation of the portrait
    assert read[3, yaw] - read[2, yaw] > 10.0  # yaw comes from the edit of w
    # the default: 128 px grey (the annotation export's size), the same pixels whatever else shares the batch
    alone = synthesize("photoreal", values[1:2], [21])
    assert alone.shape == (1, 128, 128)
    assert np.array_equal(alone[0], photoreal_images(colour[1:2])[0])
    with pytest.raises(ValueError, match="photoreal method renders"):
        photoreal_images(colour[:1], size=100)
