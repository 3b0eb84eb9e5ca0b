"""GAN evaluation: fidelity via a pluggable independent estimator, diversity ratio, CLI outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from surrogate.cli import cli
from surrogate.schema import DEFAULT_SCHEMA, AttributeSchema
from surrogate.stats import auc, pearson
from training.gan.evaluate import (
    CachedDescriber,
    RidgePixelEstimator,
    evaluate_generator,
    frechet_distance,
    identity_diversity,
    mean_pairwise_l1,
    snapshot_ranking_key,
    target_attainment,
    z_variance_shares,
)

REPO = Path(__file__).resolve().parents[1]

SCHEMA = AttributeSchema.from_names(["yaw", "AU12"])
SIZE = 12


class BrightnessSource:
    """Images whose left half brightness encodes yaw and right half AU12; z adds texture if ``use_z``."""

    def __init__(self, use_z: bool) -> None:
        self.schema, self.z_dim, self.use_z = SCHEMA, 64, use_z

    def generate(self, values: np.ndarray, z: np.ndarray) -> np.ndarray:
        norm = SCHEMA.normalise(values)
        images = np.zeros((len(values), SIZE, SIZE), np.float32)
        images[:, :, : SIZE // 2] = 40 + 150 * norm[:, :1, None]
        images[:, :, SIZE // 2 :] = 40 + 150 * norm[:, 1:, None]
        if self.use_z:
            texture = z[:, :48].reshape(len(z), 4, SIZE).repeat(3, axis=1)
            images += 30 * texture
        return np.clip(images, 0, 255).astype(np.uint8)


class HalfMeanEstimator:
    """Reads the attributes back from the half-image means (a stand-in for the recon estimator)."""

    schema = SCHEMA

    def predict(self, images: np.ndarray) -> np.ndarray:
        left = images[:, :, : SIZE // 2].mean(axis=(1, 2))
        right = images[:, :, SIZE // 2 :].mean(axis=(1, 2))
        return SCHEMA.denormalise(np.stack([(left - 40) / 150, (right - 40) / 150], axis=1))


def real_data(n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    values = SCHEMA.denormalise(rng.random((n, 2)).astype(np.float32))
    z = rng.uniform(-1, 1, (n, 64)).astype(np.float32)
    return BrightnessSource(True).generate(values, z)[:, None], values


def test_faithful_diverse_generator_scores_high() -> None:
    images, values = real_data()
    result = evaluate_generator(
        BrightnessSource(True),
        HalfMeanEstimator(),
        images,
        values,
        values[:60],
        held_images=images[:60],
        n_eval=60,
        groups=6,
        per_group=4,
    )
    report = result.report
    assert report["fidelity"]["yaw"]["pearson_r"] > 0.9 and report["fidelity"]["AU12"]["pearson_r"] > 0.9
    assert report["fidelity"]["yaw"]["estimator_r_on_real"] > 0.9
    assert report["diversity"]["ratio"] > 0.3
    assert result.samples.shape == (6, 4, SIZE, SIZE) and result.sweep.shape == (14, SIZE, SIZE)


def collapsed_report(**extra: object) -> dict:
    """The report on a generator that ignores z (one image per attribute vector)."""
    images, values = real_data()
    return evaluate_generator(
        BrightnessSource(False),
        HalfMeanEstimator(),
        images,
        values,
        values[:60],
        n_eval=60,
        groups=6,
        per_group=4,
        **extra,  # type: ignore[arg-type]
    ).report


def test_collapsed_generator_shows_a_small_diversity_ratio() -> None:
    report = collapsed_report()
    assert report["diversity"]["generated_same_y"] == 0.0 and report["diversity"]["ratio"] == 0.0
    assert not report["diversity"]["meets_target"] and not report["all_targets_met"]
    assert "identity_diversity" not in report  # only measured when a face describer is given


def test_generator_ignoring_y_has_no_fidelity() -> None:
    class IgnoresY(BrightnessSource):
        def generate(self, values: np.ndarray, z: np.ndarray) -> np.ndarray:
            return super().generate(np.full_like(values, values.mean(0)), z)

    images, values = real_data()
    report = evaluate_generator(
        IgnoresY(True), HalfMeanEstimator(), images, values, values[:60], n_eval=60, groups=6, per_group=4
    ).report
    assert abs(report["fidelity"]["yaw"]["pearson_r"]) < 0.5 and not report["fidelity"]["yaw"]["meets_target"]


def test_z_share_tells_z_moving_an_attribute_from_a_weak_response_to_y() -> None:
    class LeaksYaw(BrightnessSource):
        """Follows y, but z also turns the head: the y/z trade of docs/gan.md."""

        def generate(self, values: np.ndarray, z: np.ndarray) -> np.ndarray:
            shifted = values.copy()
            shifted[:, 0] += 0.4 * z[:, 0] * (SCHEMA.spec("yaw").high - SCHEMA.spec("yaw").low)
            return super().generate(shifted, z)

    images, values = real_data()
    leaky = evaluate_generator(
        LeaksYaw(False), HalfMeanEstimator(), images, values, values[:60], n_eval=60, groups=6, per_group=4
    ).report["fidelity"]
    assert leaky["yaw"]["z_share"] > 0.2 and leaky["AU12"]["z_share"] == pytest.approx(0.0, abs=1e-6)
    collapsed = collapsed_report()["fidelity"]
    assert collapsed["yaw"]["z_share"] == 0.0 and collapsed["AU12"]["z_share"] == 0.0
    assert leaky["yaw"]["pearson_r"] < collapsed["yaw"]["pearson_r"]
    # by hand: within-group variances 2 and 0 (mean 1) over the variance of 0, 1, 2, 3 (5/3)
    shares = z_variance_shares(np.array([[0.0], [2.0], [1.0], [1.0]]), 2, np.arange(4.0)[:, None])
    assert shares[0] == pytest.approx(0.6)
    assert np.isnan(z_variance_shares(np.zeros((4, 1)), 2, np.ones((4, 1)))[0])  # a constant reading: undefined


def test_metric_helpers_by_hand() -> None:
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.5])) == pytest.approx(0.9986, abs=1e-3)
    assert np.isnan(pearson(np.ones(5), np.arange(5.0)))
    groups = np.array([[[0, 0], [255, 255], [0, 255]]], dtype=np.uint8)  # pair distances 1, 0.5, 0.5
    assert mean_pairwise_l1(groups) == pytest.approx(2 / 3)


class MeanBrightnessDescriber:
    """A 1-d "face descriptor": the image's mean brightness in [0, 1] (stands in for dlib in arithmetic checks)."""

    def describe(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return np.array([[image.mean() / 255.0] for image in images]), np.ones(len(images), bool)


def test_frechet_distance_and_auc_by_hand() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # means 2 apart along one axis: distance 4; doubled scale: |mean|^2 + tr(4C) + tr(C) - 2 tr(2C) = |mean|^2 + tr C
    assert frechet_distance(a + [2, 0, 0], a) == pytest.approx(4.0, abs=1e-6)
    expected = float(a.mean(0) @ a.mean(0) + np.trace(np.cov(a, rowvar=False)))
    assert frechet_distance(2 * a, a) == pytest.approx(expected, rel=1e-6)
    assert auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    assert np.isnan(auc(np.array([0.5]), np.array([1])))
    # pearson skips the rows an estimator could not read (NaN)
    assert pearson(np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, np.nan, 6.0, 8.0])) == pytest.approx(1.0)


class MissingEveryOtherFace(HalfMeanEstimator):
    """An estimator that finds no face in every second image (as MediaPipe can)."""

    def predict(self, images: np.ndarray) -> np.ndarray:
        out = super().predict(images)
        self.found = np.arange(len(images)) % 2 == 0
        out[~self.found] = np.nan
        return out


def test_face_found_rate_and_realism_are_reported() -> None:
    train_images, train_values = real_data()
    held_images, held_values = real_data(60)
    result = evaluate_generator(BrightnessSource(True), MissingEveryOtherFace(), train_images, train_values,
                                held_values, n_eval=40, groups=4, per_group=4, describer=MeanBrightnessDescriber(),
                                realism_images=(held_images[:30], held_images[30:]))
    report = result.report
    assert report["face_found_rate"] == pytest.approx(0.5)
    assert report["fidelity"]["yaw"]["pearson_r"] > 0.9  # from the faces it found
    realism = report["realism"]
    assert realism["of"]["generated"] == 40 and realism["described"]["real"] == 30
    assert realism["generated_vs_real"] >= 0.0 and realism["floor_real_vs_real"] >= 0.0


def test_identity_diversity_by_hand() -> None:
    def groups(*levels: int) -> np.ndarray:
        return np.stack([np.full((4, 4), level, np.uint8) for level in levels])[None]

    # generated descriptors 0, 1, 0: distances 1, 0, 1; real 0, 0.2, 0.4: distances 0.2, 0.4, 0.2
    report = identity_diversity(groups(0, 255, 0), groups(0, 51, 102), MeanBrightnessDescriber())
    assert report["generated_mean_distance"] == pytest.approx(2 / 3)
    assert report["real_mean_distance"] == pytest.approx(0.8 / 3)
    assert report["raw_ratio"] == pytest.approx(2.5)
    # noise of 2 grey levels barely moves a 16-pixel mean: floors near 0, so the ratio beyond them is ~2.5 too
    assert report["generated_noise_floor"] < 0.01 and report["ratio"] == pytest.approx(2.5, rel=0.05)
    assert report["generated_different_person_fraction"] == pytest.approx(2 / 3)  # dlib's 0.6 threshold
    assert report["real_different_person_fraction"] == 0.0 and report["generated_detected_fraction"] == 1.0
    # evaluate_generator adds it when given a describer; a generator that ignores z has ratio 0
    assert collapsed_report(describer=MeanBrightnessDescriber())["identity_diversity"]["ratio"] == 0.0


def test_cached_describer_describes_each_image_once() -> None:
    class Counting(MeanBrightnessDescriber):
        calls = 0

        def describe(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            Counting.calls += len(images)
            return super().describe(images)

    real = np.stack([np.full((4, 4), level, np.uint8) for level in (0, 51, 102)])[None]
    cached = CachedDescriber(Counting())
    first = identity_diversity(real, real, cached)
    described = Counting.calls
    assert identity_diversity(real, real, cached) == first  # same figures from the cache...
    assert Counting.calls == described  # ...without describing anything again
    assert first == identity_diversity(real, real, MeanBrightnessDescriber())


def test_identity_diversity_discounts_what_noise_alone_moves() -> None:
    class PixelDescriber:
        """Every pixel is a descriptor dimension: as noise-sensitive as a descriptor can be."""

        def describe(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            return np.stack([image.reshape(-1) / 255.0 for image in images]), np.ones(len(images), bool)

    rng = np.random.default_rng(1)
    base = rng.integers(60, 200, (8, 8))
    # generated: one face plus noise of 3 grey levels per sample; real: different faces
    generated = np.clip(base + rng.normal(0, 3, (2, 4, 8, 8)), 0, 255).astype(np.uint8)
    real = rng.integers(0, 256, (2, 4, 8, 8)).astype(np.uint8)
    report = identity_diversity(generated, real, PixelDescriber())
    beyond = (report["generated_mean_distance"] - report["generated_noise_floor"]) / (
        report["real_mean_distance"] - report["real_noise_floor"]
    )
    assert report["generated_noise_floor"] > 0 and report["ratio"] == pytest.approx(beyond)
    assert report["ratio"] < 0.5 * report["raw_ratio"]


def test_ridge_estimator_learns_a_linear_pixel_attribute() -> None:
    images, values = real_data(200)
    estimator = RidgePixelEstimator(SCHEMA, size=SIZE, ridge=1.0).fit(images[:150, 0], values[:150])
    predicted = estimator.predict(images[150:, 0])
    assert pearson(values[150:, 1], predicted[:, 1]) > 0.9


def test_evaluate_cli_on_a_trained_checkpoint(tmp_path: Path) -> None:
    from test_gan_training import TINY, write_image_folder

    data = write_image_folder(tmp_path / "data", n=30)
    run = tmp_path / "run"
    trained = CliRunner().invoke(
        cli,
        [
            "train",
            "gan",
            "--config",
            str(TINY),
            "--data",
            str(data),
            "--attributes",
            str(data / "attributes.csv"),
            "--out",
            str(run),
            "--steps",
            "3",
        ],
    )
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "eval"
    base = ["evaluate", "gan", "--checkpoint", str(run / "last.pt"), "--data", str(data), "--n-eval", "20"]
    base += ["--attributes", str(data / "attributes.csv")]
    result = CliRunner().invoke(cli, [*base, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "evaluation.json").read_text())
    assert set(report["fidelity"]) == {
        "yaw",
        "pitch",
        "roll",
        "AU04",
        "AU05",
        "AU06",
        "AU07",
        "AU12",
        "AU23",
        "gender",
    }
    assert "ratio" in report["diversity"]
    # A full checkpoint also says how well D's auxiliary predictor (G's teacher) reads the real faces.
    teacher = {name: entry["teacher_r_on_real"] for name, entry in report["fidelity"].items()}
    assert all(-1.0 <= r <= 1.0 for r in teacher.values()), teacher
    summary_md = (out / "evaluation.md").read_text()
    assert "auxiliary predictor r on real" in summary_md and "z's share" in summary_md
    from training.gan.checkpoint import generator_only, load_checkpoint, save_checkpoint
    from training.gan.evaluate import teacher_r_on_real

    save_checkpoint(tmp_path / "g.pt", generator_only(load_checkpoint(run / "last.pt")))
    images = np.zeros((4, 1, 16, 16), np.uint8)
    assert teacher_r_on_real(tmp_path / "g.pt", images, np.zeros((4, 10), np.float32), DEFAULT_SCHEMA) is None
    for name in ("evaluation.md", "samples.png", "sweep.png", "real_neighbours.png"):
        assert (out / name).is_file(), name
    onnx = CliRunner().invoke(cli, [*base, "--estimator", str(REPO / "model_repository"), "--out", str(tmp_path / "o")])
    assert onnx.exit_code == 0, onnx.output  # the shipped recon model through onnxruntime, no torch estimator
    report = json.loads((tmp_path / "o" / "evaluation.json").read_text())
    assert all(np.isfinite(entry["mae"]) for entry in report["fidelity"].values())
    # the ONNX estimator also read the real held-out images (its ceiling column), unlike 'ridge' which is fitted
    assert all(np.isfinite(entry["estimator_r_on_real"]) for entry in report["fidelity"].values())
    # identity diversity on dlib's real descriptors (the audit's identity model, not a stand-in)
    dlib = CliRunner().invoke(cli, [*base, "--identity-diversity", "--out", str(tmp_path / "id")])
    assert dlib.exit_code == 0, dlib.output
    identity = json.loads((tmp_path / "id" / "evaluation.json").read_text())["identity_diversity"]
    assert identity["real_mean_distance"] > 0 and np.isfinite(identity["ratio"]), identity
    assert 0.0 <= identity["generated_different_person_fraction"] <= 1.0
    assert "Identity diversity" in (tmp_path / "id" / "evaluation.md").read_text()
    nowhere = CliRunner().invoke(cli, [*base, "--estimator", str(tmp_path / "nowhere"), "--out", str(out)])
    assert nowhere.exit_code != 0 and "--estimator" in nowhere.output and "Traceback" not in nowhere.output
    missing = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "gan",
            "--checkpoint",
            str(tmp_path / "none.pt"),
            "--data",
            str(data),
            "--out",
            str(out),
        ],
    )
    assert missing.exit_code != 0 and "none.pt" in missing.output and "Traceback" not in missing.output


def test_evaluate_every_snapshot_of_a_run_and_pick_the_best(tmp_path: Path) -> None:
    from test_gan_training import TINY, write_image_folder

    data = write_image_folder(tmp_path / "data", n=30)
    run = tmp_path / "run"
    common = ["--data", str(data), "--attributes", str(data / "attributes.csv")]
    trained = CliRunner().invoke(
        cli,
        [
            "train",
            "gan",
            "--config",
            str(TINY),
            *common,
            "--out",
            str(run),
            "--steps",
            "4",
            "--set",
            "train.snapshot_every=2",
        ],
    )
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "eval"

    def evaluate_run(where: Path, *options: str) -> None:
        result = CliRunner().invoke(
            cli, ["evaluate", "gan", "--checkpoint", str(run), *common, "--out", str(where), *options]
        )
        assert result.exit_code == 0, result.output

    evaluate_run(out, "--n-eval", "20", "--confirm-top", "0")
    summary = json.loads((out / "snapshots.json").read_text())
    assert set(summary["snapshots"]) == {"2", "4"} and summary["best_step"] in (2, 4)
    assert summary["confirmed"] == {} and summary["confirm_n"] is None
    assert summary["rank_by"] == "attainment"
    assert summary["best_step"] == int(
        max(summary["snapshots"], key=lambda k: snapshot_ranking_key(summary["snapshots"][k]))
    )
    assert (out / "step_0000002" / "evaluation.json").is_file() and (out / "step_0000004" / "samples.png").is_file()
    table = (out / "snapshots.md").read_text()
    assert "**best**" in table and "| 2" in table and "| 4" in table
    assert (out / "snapshots.png").is_file()  # matplotlib is a dev dependency
    # the top snapshot evaluated again with more held-out vectors; the pick comes from that evaluation
    confirm = tmp_path / "confirm"
    held_out = "0.5"  # 15 of the 30 rows held out: room for 4 vectors, then 12
    evaluate_run(
        confirm, "--n-eval", "4", "--held-out-fraction", held_out, "--confirm-top", "1", "--confirm-n", "12",
        "--rank-by", "targets",
    )  # fmt: skip
    summary = json.loads((confirm / "snapshots.json").read_text())
    assert summary["rank_by"] == "targets" and "(`--rank-by targets`)" in (confirm / "snapshots.md").read_text()
    assert summary["confirm_n"] == 12 and list(summary["confirmed"]) == [str(summary["best_step"])]
    assert summary["confirmed"][str(summary["best_step"])]["n_eval"] == 12
    assert summary["snapshots"][str(summary["best_step"])]["n_eval"] == 4
    assert "Confirmed with 12 held-out vectors" in (confirm / "snapshots.md").read_text()
    assert (confirm / f"step_{summary['best_step']:07d}_n12" / "evaluation.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    none = CliRunner().invoke(cli, ["evaluate", "gan", "--checkpoint", str(empty), *common, "--out", str(out)])
    assert none.exit_code != 0 and "no generator-STEP.pt snapshots" in none.output and "Traceback" not in none.output


def test_snapshot_ranking_prefers_balance_over_a_collapsing_high_r() -> None:
    def report(r: float, diversity: float, gender: float = 0.7) -> dict:
        fidelity = {
            "yaw": {"pearson_r": r, "target_r": 0.8, "meets_target": r >= 0.8},
            "gender": {"pearson_r": gender, "target_r": 0.6, "meets_target": gender >= 0.6},
        }
        return {
            "fidelity": fidelity,
            "mean_pearson_r": (r + gender) / 2,
            "diversity": {"ratio": diversity, "target_ratio": 0.5, "meets_target": diversity >= 0.5},
        }

    balanced, collapsing = report(0.6, 0.4), report(0.7, 0.05)
    assert collapsing["mean_pearson_r"] > balanced["mean_pearson_r"]
    for rule in ("attainment", "targets"):
        assert snapshot_ranking_key(balanced, rule) > snapshot_ranking_key(collapsing, rule)
    # One far miss against two near misses (stage 8's 43,500 against v5): the rules disagree, by design.
    one_far_miss, two_near_misses = report(0.66, 0.55, gender=0.9), report(0.78, 0.49, gender=0.9)
    assert snapshot_ranking_key(one_far_miss, "targets") > snapshot_ranking_key(two_near_misses, "targets")
    assert snapshot_ranking_key(two_near_misses) > snapshot_ranking_key(one_far_miss)  # attainment is the default
    with pytest.raises(ValueError, match="rank_by"):
        snapshot_ranking_key(balanced, "mean_r")
    assert target_attainment(report(float("nan"), 0.0, gender=-0.3)) == 0.0
    assert target_attainment(report(2.0, 9.0, gender=0.9)) == 1.0  # capped: no target buys another
