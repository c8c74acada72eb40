"""Procedural street scenes: exact labels, determinism, domain differences."""

import numpy as np
import pytest

from frugalvision.data.streets import (
    SKY,
    STREET_DOMAINS,
    StreetScenes,
    render_street,
    render_streets,
    street_domain,
)
from frugalvision.errors import ConfigError


@pytest.mark.parametrize("name", sorted(STREET_DOMAINS))
def test_every_domain_renders_valid_images_and_seven_class_labels(name):
    images, labels = render_streets(name, 6, 32, 64, seed=1)
    assert images.shape == (6, 32, 64, 3) and images.dtype == np.float32
    assert labels.shape == (6, 32, 64) and labels.dtype == np.uint8
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(np.unique(labels)) <= set(range(7))
    assert (labels[:, 0] == SKY).mean() > 0.3  # the top row is mostly sky


def test_same_seed_same_scene_other_seed_or_domain_other_scene():
    a, la = render_street("city", 32, 64, seed=3, index=5)
    b, lb = render_street("city", 32, 64, seed=3, index=5)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    c, _ = render_street("city", 32, 64, seed=4, index=5)
    assert not np.array_equal(a, c)
    d, _ = render_street("dusty", 32, 64, seed=3, index=5)
    assert not np.array_equal(a, d)


def test_domains_differ_in_look_and_content():
    synthetic, s_labels = render_streets("synthetic", 24, 32, 64, seed=0)
    city, _ = render_streets("city", 24, 32, 64, seed=0)
    dusty, d_labels = render_streets("dusty", 24, 32, 64, seed=0)
    saturation = lambda x: (x.max(-1) - x.min(-1)).mean()  # noqa: E731
    assert saturation(city) < 0.7 * saturation(synthetic)
    assert dusty[..., 0].mean() > dusty[..., 2].mean() + 0.05  # warm tint
    assert (d_labels == 5).mean() > (s_labels == 5).mean()  # more pedestrians in the dusty domain


def test_dataset_wraps_channels_first_and_checks_shapes():
    data = StreetScenes.render("varied", 3, 16, 24, seed=0)
    image, labels = data[1]
    assert image.shape == (3, 16, 24) and labels.shape == (16, 24) and labels.dtype.is_floating_point is False
    assert data.name == "varied" and len(data) == 3
    with pytest.raises(ConfigError, match="disagree"):
        StreetScenes(np.zeros((2, 8, 8, 3)), np.zeros((3, 8, 8)))
    with pytest.raises(ConfigError, match="unknown street domain"):
        street_domain("mars")
    with pytest.raises(ConfigError, match="at least 8"):
        render_street("city", 4, 4)
