"""The MediaPipe face reader: pose conventions, tight crops, faceless images, and the mediapipe extractor CLI."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("mediapipe", reason="the portraits extra (mediapipe) is not installed")
data = pytest.importorskip("skimage.data")

from surrogate.cli import cli  # noqa: E402
from surrogate.face_align import align_face  # noqa: E402
from surrogate.imageio import save_png  # noqa: E402
from surrogate.landmarks import FaceLandmarks, aus_from_blendshapes, pose_from_matrix  # noqa: E402
from surrogate.portrait_corpus import rotate_frame  # noqa: E402
from surrogate.schema import DEFAULT_SCHEMA  # noqa: E402
from surrogate.synthesis_3d import render_surrogates_3d  # noqa: E402


@pytest.fixture(scope="module")
def reader() -> FaceLandmarks:
    return FaceLandmarks()


def test_mirrored_image_flips_the_sign_of_yaw_and_roll(reader: FaceLandmarks) -> None:
    image = data.astronaut()
    face, mirrored = reader.read(image), reader.read(np.ascontiguousarray(image[:, ::-1]))
    assert face is not None and mirrored is not None
    (yaw, pitch, roll), (m_yaw, m_pitch, m_roll) = face.pose, mirrored.pose
    assert abs(yaw + m_yaw) < 2.0 and abs(roll + m_roll) < 2.0 and abs(pitch - m_pitch) < 2.0
    assert abs(roll) > 1.0  # her head is tilted, so the flip is a real test of the sign


def test_clockwise_rotation_adds_roll(reader: FaceLandmarks) -> None:
    image = data.astronaut()
    before, after = reader.read(image), reader.read(rotate_frame(image, 15.0))
    assert before is not None and after is not None
    assert after.pose[2] - before.pose[2] == pytest.approx(15.0, abs=3.0)


def test_pose_signs_follow_the_schema_on_renders_with_known_pose(reader: FaceLandmarks) -> None:
    """The 3-D renderer draws the schema's convention (README): MediaPipe must read the same signs."""
    schema = DEFAULT_SCHEMA
    rows = np.zeros((4, len(schema)), np.float32)
    rows[:, schema.index("gender")] = 0.5
    rows[0, schema.index("yaw")] = 30
    rows[1, schema.index("pitch")] = 20
    rows[2, schema.index("roll")] = 20
    rows[3, schema.index("AU12")] = 4
    images = render_surrogates_3d(schema, rows, [3] * 4, size=256, rgb=True)
    readings = [reader.read(image) for image in images]
    assert all(r is not None for r in readings)
    assert readings[0].pose[0] > 15 and readings[1].pose[1] > 10 and readings[2].pose[2] > 15
    assert readings[3].aus()["AU12"] > 1.0


def test_pose_from_matrix_reads_pure_rotations() -> None:
    angle = np.radians(20)
    c, s = np.cos(angle), np.sin(angle)
    about_y = np.eye(4)
    about_y[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]  # MediaPipe frame: nose (+z) swings towards -x
    about_z = np.eye(4)
    about_z[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    yaw, pitch, roll = pose_from_matrix(about_y)
    assert abs(yaw) == pytest.approx(20, abs=1e-3) and pitch == pytest.approx(0, abs=1e-3)
    assert abs(pose_from_matrix(about_z)[2]) == pytest.approx(20, abs=1e-3)


def test_au_calibration_maps_rest_to_zero_and_strong_to_five() -> None:
    from surrogate.landmarks import AU_BLENDSHAPES, AU_CALIBRATION, BLENDSHAPE_NAMES

    rest, strong = np.zeros(52, np.float32), np.ones(52, np.float32)
    for au, names in AU_BLENDSHAPES.items():
        for name in names:
            rest[BLENDSHAPE_NAMES.index(name)] = AU_CALIBRATION[au][0]
            strong[BLENDSHAPE_NAMES.index(name)] = AU_CALIBRATION[au][1]
    rest_aus, strong_aus = aus_from_blendshapes(rest), aus_from_blendshapes(strong)
    assert all(rest_aus[au] == pytest.approx(0.0, abs=1e-5) for au in AU_BLENDSHAPES)
    assert all(strong_aus[au] == pytest.approx(5.0) for au in AU_BLENDSHAPES)
    # AU06's proxy: no eye squint, no cheek raise, however broad the smile
    smile_only = rest.copy()
    smile_only[BLENDSHAPE_NAMES.index("mouthSmileLeft")] = smile_only[BLENDSHAPE_NAMES.index("mouthSmileRight")] = 1
    for name in ("eyeSquintLeft", "eyeSquintRight"):
        smile_only[BLENDSHAPE_NAMES.index(name)] = 0.0
    assert aus_from_blendshapes(smile_only)["AU06"] == 0.0 and aus_from_blendshapes(strong)["AU06"] > 4.5


def test_tightly_cropped_small_faces_are_found() -> None:
    """LFW faces cut from brow to chin (scikit-image's lfw_subset), scaled to 64x64: >= 90% found."""
    from PIL import Image

    faces = data.lfw_subset()[:30]
    found = 0
    for face in faces:
        pixels = np.clip(np.round(face * 255), 0, 255).astype(np.uint8)
        found += align_face(np.asarray(Image.fromarray(pixels).resize((64, 64), Image.BICUBIC)), 64) is not None
    assert found / len(faces) >= 0.9


def test_faceless_images_are_not_read(reader: FaceLandmarks) -> None:
    rng = np.random.default_rng(0)
    assert reader.read(np.full((200, 200), 128, np.uint8)) is None
    assert reader.read(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)) is None
    with pytest.raises(ValueError, match="uint8"):
        reader.read(np.zeros((64, 64), np.float32))


def test_extract_cli_with_mediapipe_names_the_faceless_file(tmp_path: Path) -> None:
    save_png(tmp_path / "astronaut.png", data.astronaut())
    save_png(tmp_path / "wall.png", np.full((120, 120), 200, np.uint8))
    out = tmp_path / "attributes.csv"
    result = CliRunner().invoke(cli, ["attributes", "extract", str(tmp_path / "astronaut.png"),
                                      str(tmp_path / "wall.png"), "--extractor", "mediapipe", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(out.read_text()))}
    assert rows["wall"]["status"] == "no_face" and rows["wall"]["file"].endswith("wall.png")
    assert rows["astronaut"]["status"] == "ok"
    assert float(rows["astronaut"]["AU12"]) > 2.5  # she smiles broadly
    assert 0.0 <= float(rows["astronaut"]["gender"]) <= 1.0


@pytest.mark.parametrize("mediapipe_first", [False, True])
def test_a_reader_left_open_exits_quietly(tmp_path: Path, mediapipe_first: bool) -> None:
    """A process that never closes its reader (also one used from a worker thread) ends without MediaPipe's
    finaliser printing an ignored exception, whichever of MediaPipe and the project was imported first."""
    import subprocess
    import sys

    script = "\n".join([
        "import concurrent.futures",
        "import mediapipe" if mediapipe_first else "",
        "from skimage import data",
        "from surrogate.landmarks import FaceLandmarks",
        "reader = FaceLandmarks()",
        "with concurrent.futures.ThreadPoolExecutor(1) as pool:",
        "    assert pool.submit(reader.read, data.astronaut()).result() is not None",
        "other = FaceLandmarks()",
        "assert other.read(data.astronaut()) is not None",
    ])
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
