"""Each conditional BEGAN-CS loss term against a hand-computed example, and the network shapes."""

from __future__ import annotations

import pytest
import torch

from training.gan.config import ConfigError, ModelConfig, load_config
from training.gan.losses import (
    constraint_loss,
    convergence_measure,
    discriminator_loss,
    generator_loss,
    label_loss,
    mode_seeking_loss,
    reconstruction_loss,
    update_k,
)
from training.gan.networks import Discriminator, Generator, from_began, to_began

V = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
D_V = torch.tensor([[0.5, -1.0], [0.0, 1.0]])


def test_reconstruction_loss_l1_and_l2_by_hand() -> None:
    # |diff| = 0.5, 0, 0.5, 1 -> mean 0.5 ; diff^2 = 0.25, 0, 0.25, 1 -> mean 0.375
    assert reconstruction_loss(V, D_V, "l1").item() == pytest.approx(0.5)
    assert reconstruction_loss(V, D_V, "l2").item() == pytest.approx(0.375)
    with pytest.raises(ValueError, match="l3"):
        reconstruction_loss(V, D_V, "l3")


def test_constraint_loss_is_mean_abs_between_z_and_encoding() -> None:
    z = torch.tensor([[0.5, -0.5]])
    encoded = torch.tensor([[0.0, 0.5]])
    assert constraint_loss(z, encoded).item() == pytest.approx(0.75)  # (0.5 + 1.0) / 2


def test_label_loss_is_mse() -> None:
    y = torch.tensor([[0.2, 0.8]])
    y_hat = torch.tensor([[0.4, 0.4]])
    assert label_loss(y, y_hat).item() == pytest.approx(0.1)  # (0.04 + 0.16) / 2


def test_discriminator_and_generator_losses_follow_the_paper() -> None:
    lx, lg, lc, lab = (torch.tensor(v) for v in (0.3, 0.2, 0.4, 0.1))
    # L_D = L(x) - k L(G) + alpha L_C + MSE = 0.3 - 0.5*0.2 + 0.5*0.4 + 0.1 = 0.5
    assert discriminator_loss(lx, lg, 0.5, lc, lab, alpha=0.5).item() == pytest.approx(0.5)
    # label weight scales only the MSE term
    assert discriminator_loss(lx, lg, 0.5, lc, lab, alpha=0.5, label_weight=0.0).item() == pytest.approx(0.4)
    # L_G = L(G) + MSE = 0.2 + 0.1
    assert generator_loss(lg, lab).item() == pytest.approx(0.3)


def test_mode_seeking_term_by_hand_and_in_the_generator_loss() -> None:
    fake_a, fake_b = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]])  # image distance 0.5
    z_a, z_b = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.0, 1.0]])  # noise distance 1.5
    # 1 / (0.5 / 1.5 + eps) = 3 (minus eps's share)
    assert mode_seeking_loss(fake_a, fake_b, z_a, z_b).item() == pytest.approx(3.0, rel=1e-4)
    # identical images (collapse): the term is 1 / eps, huge
    assert mode_seeking_loss(fake_a, fake_a, z_a, z_b).item() == pytest.approx(1e5)
    # L_G + weight * L_MS = 0.2 + 0.1 + 0.01 * 3
    lg, lab = torch.tensor(0.2), torch.tensor(0.1)
    assert generator_loss(lg, lab, 1.0, torch.tensor(3.0), 0.01).item() == pytest.approx(0.33)
    assert generator_loss(lg, lab, 1.0, torch.tensor(3.0)).item() == pytest.approx(0.3)  # weight 0 = the paper


def test_k_update_is_proportional_control_clipped_to_unit_interval() -> None:
    lx, lg = torch.tensor(0.3), torch.tensor(0.2)
    # 0.5 + 0.001 * (0.5*0.3 - 0.2) = 0.49995
    assert update_k(torch.tensor(0.5), lx, lg, gamma=0.5, lambda_k=0.001).item() == pytest.approx(0.49995)
    assert update_k(torch.tensor(0.0), lx, lg, gamma=0.5, lambda_k=0.001).item() == 0.0
    assert update_k(torch.tensor(1.0), lx, torch.tensor(0.0), gamma=0.5, lambda_k=10.0).item() == 1.0


def test_convergence_measure() -> None:
    # M = L(x) + |gamma L(x) - L(G)| = 0.3 + |0.15 - 0.2| = 0.35
    assert convergence_measure(torch.tensor(0.3), torch.tensor(0.2), 0.5).item() == pytest.approx(0.35)


@pytest.mark.parametrize(("size", "channels", "skip"), [(16, 1, False), (32, 3, True), (64, 1, True)])
def test_network_shapes(size: int, channels: int, skip: bool) -> None:
    cfg = ModelConfig(image_size=size, channels=channels, n=4, skip=skip)
    generator, discriminator = Generator(cfg, 10), Discriminator(cfg, 10)
    z, y = torch.rand(3, 64) * 2 - 1, torch.rand(3, 10)
    image = generator(z, y)
    assert image.shape == (3, channels, size, size)
    out = discriminator(image)
    assert out.reconstruction.shape == image.shape
    assert out.latent.shape == (3, 64)
    assert out.labels.shape == (3, 10) and bool(((out.labels >= 0) & (out.labels <= 1)).all())


def test_generator_output_depends_on_z_and_y() -> None:
    torch.manual_seed(0)
    generator = Generator(ModelConfig(image_size=16, n=4), 3)
    z, y = torch.rand(2, 64), torch.rand(2, 3)
    base = generator(z, y)
    assert not torch.allclose(base, generator(z + 0.5, y))
    assert not torch.allclose(base, generator(z, y + 0.5))


def test_began_scaling_round_trip() -> None:
    pixels = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)
    scaled = to_began(pixels)
    assert scaled.min().item() == -1.0 and scaled.max().item() == 1.0
    assert torch.equal(from_began(scaled), pixels)


def test_config_rejects_bad_values_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="model.image_size"):
        load_config(None, {"model.image_size": 48})
    with pytest.raises(ConfigError, match="loss.gama"):
        load_config(None, {"loss.gama": 0.5})
    with pytest.raises(ConfigError, match="latent_dim"):
        load_config(None, {"model.latent_dim": 32})
    assert load_config(None, {"model.latent_dim": 74}).model.latent_dim == 74
    assert load_config(None, {"loss.gamma": 0.5}).loss.gamma == 0.5
    with pytest.raises(ConfigError, match="loss.mode_seeking"):
        load_config(None, {"loss.mode_seeking": -1.0})
    with pytest.raises(ConfigError, match="batch_size must be even"):
        load_config(None, {"loss.mode_seeking": 0.01, "optim.batch_size": 15})
    assert load_config(None, {"loss.label_boost_g": "AU06=2; gender=1.5"}).loss.label_boosts() == {
        "AU06": 2.0,
        "gender": 1.5,
    }
    for bad in ("AU06", "AU06=0", "AU06=-1", "=2", "AU06=two", "AU06=nan"):
        with pytest.raises(ConfigError, match="loss.label_boost_g"):
            load_config(None, {"loss.label_boost_g": bad})


def test_standardised_label_loss_weights_each_attribute_by_inverse_variance() -> None:
    from training.gan.losses import label_loss, standardising_weights

    labels = torch.tensor([[0.0, 0.45], [1.0, 0.55], [0.0, 0.45], [1.0, 0.55]])
    weights = standardising_weights(labels)
    # variances 0.25 and 0.0025 -> inverse 4 and 400 -> scaled to mean 1
    assert torch.allclose(weights, torch.tensor([8 / 404, 800 / 404]))
    y, y_hat = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.6, 0.6]])
    # hand computed: mean(0.01 * w) over the two attributes
    assert torch.isclose(label_loss(y, y_hat, weights), torch.tensor(0.01 * (8 / 404 + 800 / 404) / 2))
    assert torch.isclose(label_loss(y, y_hat), torch.tensor(0.01))


def test_label_boost_multiplies_one_attributes_weight_without_renormalising() -> None:
    from training.gan.losses import boosted_weights, label_loss

    names = ["yaw", "AU06", "gender"]
    assert boosted_weights(None, {}, names) is None  # nothing boosted: the plain MSE stays
    assert torch.equal(boosted_weights(None, {"AU06": 2.0}, names), torch.tensor([1.0, 2.0, 1.0]))
    standardised = torch.tensor([0.5, 1.0, 1.5])
    assert torch.equal(boosted_weights(standardised, {"AU06": 3.0}, names), torch.tensor([0.5, 3.0, 1.5]))
    y, y_hat = torch.zeros(1, 3), torch.tensor([[0.1, 0.1, 0.1]])
    # hand computed: mean(0.01 * [1, 2, 1]) = 0.04 / 3
    assert torch.isclose(label_loss(y, y_hat, boosted_weights(None, {"AU06": 2.0}, names)), torch.tensor(0.04 / 3))
    with pytest.raises(ValueError, match=r"\['AU6'\].*yaw, AU06, gender"):
        boosted_weights(None, {"AU6": 2.0}, names)
