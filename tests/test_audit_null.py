"""Re-identification statistics: the exact binomial tail, the attribute-matched null and the verdict.

All on small hand-made descriptor arrays (no dlib): the decision logic must call a surrogate that carries
identity a leak, and one that only matches attributes (however well that beats chance) not.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from audit.config import AuditConfig, AuditConfigError
from audit.identity import (
    ABOVE_CHANCE,
    ATTRIBUTE_MATCH,
    IDENTITY_LEAK,
    WITHIN_CHANCE,
    attribute_neighbours,
    binomial_tail,
    chance_verdict,
    leakage_verdict,
    null_comparison,
    poisson_binomial_tail,
    reidentify,
    stranger_hits,
    true_positions,
)


def test_binomial_tail_matches_hand_computed_values() -> None:
    n, p = 101, 1 / 101
    by_hand = 1 - sum(math.comb(n, x) * p**x * (1 - p) ** (n - x) for x in range(3))
    assert binomial_tail(3, n, p) == pytest.approx(by_hand, rel=1e-12)
    assert binomial_tail(3, n, p) == pytest.approx(0.0794, abs=5e-5)  # the GAN's 3 / 101 of the last audit
    assert binomial_tail(2, n, p) == pytest.approx(0.2642, abs=5e-5)
    assert binomial_tail(4, n, p) == pytest.approx(0.0184, abs=5e-5)
    assert binomial_tail(1, 10, 0.2) == pytest.approx(1 - 0.8**10)
    assert binomial_tail(10, 10, 0.2) == pytest.approx(0.2**10)
    assert binomial_tail(0, 10, 0.2) == 1.0 and binomial_tail(11, 10, 0.2) == 0.0
    assert binomial_tail(1, 10, 0.0) == 0.0 and binomial_tail(10, 10, 1.0) == 1.0
    assert binomial_tail(1000, 2000, 0.5) == pytest.approx(0.5 + math.comb(2000, 1000) / 2**2001, rel=1e-9)
    with pytest.raises(ValueError, match="0 <= p <= 1"):
        binomial_tail(1, 10, 1.5)


def test_binomial_tail_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for n, p in ((101, 1 / 101), (101, 5 / 101), (200, 0.005), (37, 0.3)):
        for hits in range(0, min(n, 12) + 1):
            assert binomial_tail(hits, n, p) == pytest.approx(stats.binom.sf(hits - 1, n, p), rel=1e-9, abs=1e-15)


def test_reidentify_p_value_is_the_exact_tail_and_one_hit_does_not_flip_the_verdict() -> None:
    rng = np.random.default_rng(3)
    gallery = rng.standard_normal((101, 8))
    ids = np.arange(101)
    probes = rng.standard_normal((101, 8)) * 50  # far from everything: hits only where placed
    for hits in (2, 3, 4):
        placed = probes.copy()
        placed[:hits] = gallery[:hits] + 1e-3
        first = reidentify(gallery, ids, placed, ids, ranks=(1,))[0]
        assert first.hits >= hits
        assert first.p_value == pytest.approx(binomial_tail(first.hits, 101, 1 / 101))
    # The old 2-SE rule called 3 / 101 "above chance" (one hit over its line); the exact test at 0.05 does not.
    assert chance_verdict(binomial_tail(3, 101, 1 / 101)) == WITHIN_CHANCE
    assert chance_verdict(binomial_tail(4, 101, 1 / 101)) == ABOVE_CHANCE
    assert chance_verdict(binomial_tail(4, 101, 1 / 101), alpha=0.01) == WITHIN_CHANCE


def test_poisson_binomial_tail() -> None:
    assert poisson_binomial_tail(1, [0.5, 0.2]) == pytest.approx(1 - 0.5 * 0.8)
    assert poisson_binomial_tail(2, [0.5, 0.2]) == pytest.approx(0.1)
    assert poisson_binomial_tail(3, [0.5, 0.2]) == 0.0
    assert poisson_binomial_tail(0, [0.5, 0.2]) == 1.0
    assert poisson_binomial_tail(3, [0.1] * 50) == pytest.approx(binomial_tail(3, 50, 0.1), rel=1e-10)


def test_neighbours_are_the_k_nearest_other_faces_never_the_face_itself() -> None:
    values = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.1, 0.0], [0.0, 0.3], [0.9, 1.0]])
    neighbours = attribute_neighbours(values, 2)
    assert neighbours.shape == (6, 2)
    assert neighbours.tolist() == [[1, 3], [0, 3], [5, 4], [0, 1], [0, 1], [2, 4]]
    for k in range(1, 6):
        found = attribute_neighbours(values, k)
        assert not (found == np.arange(6)[:, None]).any()  # an identical twin still never yields the face itself
        distances = np.linalg.norm(values[:, None] - values[None], axis=2)
        for i in range(6):
            others = sorted((distances[i, j], j) for j in range(6) if j != i)
            assert found[i].tolist() == [j for _, j in others[:k]]
    assert attribute_neighbours(values, 50).shape == (6, 5)  # capped at the N - 1 other faces
    assert attribute_neighbours(values[:1], 5).shape == (1, 0)
    with pytest.raises(ValueError, match="finite"):
        attribute_neighbours(np.array([[0.0], [np.nan]]), 1)


def test_strangers_use_the_schema_normalisation() -> None:
    """Neighbours in normalised units: 10 degrees of yaw (1/12 of its range) are closer than a gender flip."""
    from audit.run import attribute_strangers
    from audit.sources import FaceSet
    from surrogate.schema import DEFAULT_SCHEMA

    rows = np.zeros((3, len(DEFAULT_SCHEMA)), np.float32)
    yaw, gender = DEFAULT_SCHEMA.index("yaw"), DEFAULT_SCHEMA.index("gender")
    rows[:, gender] = [0.0, 0.0, 0.8]
    rows[:, yaw] = [0.0, 10.0, 0.0]  # raw units: face 2 (0.8 away) is nearer to face 0 than face 1 (10 away)
    faces = FaceSet("real", [], np.arange(3), rows, DEFAULT_SCHEMA)
    neighbours, info = attribute_strangers(faces, ["3d"], None, 1)
    assert neighbours is not None and neighbours[:, 0].tolist() == [1, 0, 0]
    assert info["neighbours"] == 1 and info["attributes"] == list(DEFAULT_SCHEMA.names)
    assert attribute_strangers(faces, ["3d"], None, 0)[0] is None
    unknown = FaceSet("real", [], np.arange(3), None, None)
    skipped, info = attribute_strangers(unknown, ["3d"], None, 5)
    assert skipped is None and "unknown" in info["skipped"]


def test_stranger_hits_rank_the_source_in_the_gallery_without_the_strangers_own_photo() -> None:
    gallery = np.array([[0.0], [1.0], [1.1], [5.0]])
    probes = np.array([[0.0], [1.0], [1.1], [5.0]])  # each probe sits on its own photo
    neighbours = np.array([[1], [2], [1], [2]])
    hits = stranger_hits(gallery, probes, neighbours)
    # source 0, stranger 1 (at 1.0): without photo 1 the nearest is photo 2 (1.1), not 0 -> miss
    # source 1, stranger 2 (at 1.1): without photo 2 the nearest is photo 1 -> hit
    # source 2, stranger 1 (at 1.0): without photo 1 the nearest is photo 2 -> hit
    # source 3, stranger 2 (at 1.1): photo 1 is nearer than photo 3 -> miss
    assert hits[:, 0].tolist() == [False, True, True, False]
    assert stranger_hits(gallery, probes, neighbours, rank=3)[:, 0].tolist() == [True, True, True, True]
    with pytest.raises(ValueError, match="own attribute-matched stranger"):
        stranger_hits(gallery, probes, np.array([[0], [2], [1], [2]]))


def test_null_comparison_accounts_for_a_null_estimated_from_few_trials() -> None:
    # One real hit, strangers never hit: a binomial test against the pooled null rate (0) would give p = 0.
    one = null_comparison(np.array([1, 0, 0], bool), np.zeros((3, 2), bool))
    assert one.null_rate == 0.0 and one.observed_hits == 1 and one.p_value == pytest.approx(1 / 3)
    every = null_comparison(np.ones(4, bool), np.zeros((4, 2), bool))
    assert every.p_value == pytest.approx((1 / 3) ** 4)
    # Strangers hit as often as the real probes: no evidence of anything beyond the attributes.
    same = null_comparison(np.array([1, 1, 0, 0], bool), np.array([[1, 1], [1, 1], [0, 0], [0, 0]], bool))
    assert same.p_value == 1.0 and same.null_rate == pytest.approx(0.5) and same.null_expected_hits == 2.0
    with pytest.raises(ValueError, match="at least one stranger"):
        null_comparison(np.ones(3, bool), np.zeros((3, 0), bool))


def _descriptor_world(identity_weight: float, attribute_weight: float, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Gallery, surrogates and attributes of 100 faces in 20 attribute look-alike groups of 5.

    A face's descriptor is its identity plus an embedding of its attributes (pose, gender, ... show in a
    photo). A surrogate's descriptor is a fresh random identity, the same attribute embedding
    (``attribute_weight``) and ``identity_weight`` times the source's identity (what must not leak).
    """
    rng = np.random.default_rng(seed)
    groups, size, dim = 20, 5, 64
    centres = rng.uniform(0, 1, (groups, 10))
    attributes = np.repeat(centres, size, axis=0) + rng.normal(0, 0.002, (groups * size, 10))
    embed = rng.standard_normal((10, dim)) * 3.0
    identities = rng.standard_normal((groups * size, dim)) * 0.3
    gallery = identities + attributes @ embed
    own = rng.standard_normal((groups * size, dim)) * 0.3
    surrogates = own + attribute_weight * (attributes @ embed) + identity_weight * identities
    return gallery, surrogates, attributes


def _decide(gallery: np.ndarray, surrogates: np.ndarray, attributes: np.ndarray, k: int = 4) -> tuple[str, float]:
    ids = np.arange(len(gallery))
    first = reidentify(gallery, ids, surrogates, ids, ranks=(1,))[0]
    neighbours = attribute_neighbours(attributes, k)
    comparison = null_comparison(true_positions(gallery, ids, surrogates, ids) < 1,
                                 stranger_hits(gallery, surrogates, neighbours), 1)
    return leakage_verdict(first.p_value, comparison.p_value), first.p_value


def test_identity_carrying_surrogates_are_a_leak_attribute_matching_ones_are_not() -> None:
    gallery, attribute_only, attributes = _descriptor_world(identity_weight=0.0, attribute_weight=1.0)
    verdict, p_chance = _decide(gallery, attribute_only, attributes)
    assert p_chance < 1e-6  # far above chance: the old verdict would have called it leakage
    assert verdict == ATTRIBUTE_MATCH

    gallery, leaking, attributes = _descriptor_world(identity_weight=1.0, attribute_weight=1.0)
    assert _decide(gallery, leaking, attributes)[0] == IDENTITY_LEAK
    gallery, weak, attributes = _descriptor_world(identity_weight=0.3, attribute_weight=1.0)
    assert _decide(gallery, weak, attributes)[0] == IDENTITY_LEAK  # a partial identity signal is still caught

    gallery, unrelated, attributes = _descriptor_world(identity_weight=0.0, attribute_weight=0.0)
    assert _decide(gallery, unrelated, attributes)[0] == WITHIN_CHANCE


def test_verdict_wording_and_alpha() -> None:
    assert leakage_verdict(0.5, 0.001) == WITHIN_CHANCE == "within chance"
    assert leakage_verdict(0.01, 0.2) == ATTRIBUTE_MATCH
    assert ATTRIBUTE_MATCH == "attribute-level match (not above the attribute-matched null)"
    assert leakage_verdict(0.01, 0.01) == IDENTITY_LEAK == "identity leak (above the attribute-matched null)"
    assert leakage_verdict(0.01, None) == ABOVE_CHANCE  # no null available
    assert leakage_verdict(0.03, 0.03, alpha=0.01) == WITHIN_CHANCE
    with pytest.raises(ValueError, match="alpha"):
        leakage_verdict(0.01, 0.01, alpha=0.0)


def test_config_checks_alpha_and_null_neighbours(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text("[audit.identity]\nalpha = 1.5\n")
    with pytest.raises(AuditConfigError, match="identity.alpha must lie strictly between 0 and 1"):
        AuditConfig.from_file(path)
    path.write_text("[audit.identity]\nnull_neighbours = -1\n")
    with pytest.raises(AuditConfigError, match="null_neighbours"):
        AuditConfig.from_file(path)
    path.write_text("[audit.identity]\nnull_neighbours = 8\nalpha = 0.01\n")
    config = AuditConfig.from_file(path)
    assert config.identity.null_neighbours == 8 and config.identity.alpha == 0.01
    assert AuditConfig().identity.null_neighbours == 5 and AuditConfig().identity.alpha == 0.05
    from audit.cli import audit_command

    path.write_text("[audit.identity]\nalpha = 0\n")
    result = CliRunner().invoke(audit_command, ["--config", str(path)])
    assert result.exit_code == 1 and "identity.alpha must lie strictly between 0 and 1" in result.output
    assert "Traceback" not in result.output
