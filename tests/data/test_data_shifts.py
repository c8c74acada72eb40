import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from frugalvision.data import (
    TEXTURE_FAMILIES,
    color_domains,
    composite,
    concat_arrays,
    derive_seed,
    domain_shares,
    load_source,
    load_textures,
    rotated_domains,
    sample_backgrounds,
    texture_background_domains,
)
from frugalvision.errors import DataError


@pytest.fixture(scope="module")
def small():
    """200 real MNIST digits (every 5th of the mnist5k test part)."""
    return load_source("mnist5k", train=False).subset(torch.arange(0, 1000, 5))


def test_rotated_domains_protocol(small):
    doms = rotated_domains(small, seed=3)
    assert list(doms) == ["rot0", "rot15", "rot30", "rot45", "rot60", "rot75"]
    assert all(d.name == k for k, d in doms.items())
    shares = domain_shares(len(small), 6, seed=3)
    assert sorted(torch.cat(shares).tolist()) == list(range(len(small)))  # disjoint shares covering the data
    assert [len(s) for s in shares] == [len(d) for d in doms.values()] == [34, 34, 33, 33, 33, 33]
    for (name, dom), share in zip(doms.items(), shares):
        expected = TF.rotate(small.images[share], float(name[3:]), interpolation=InterpolationMode.BILINEAR, fill=0)
        assert torch.equal(dom.images, expected) and torch.equal(dom.labels, small.labels[share])
    assert torch.equal(doms["rot0"].images, small.images[shares[0]])
    again = rotated_domains(small, seed=3)
    assert all(torch.equal(again[k].images, doms[k].images) for k in doms)
    assert not torch.equal(domain_shares(len(small), 6, seed=4)[2], shares[2])


def test_rotation_matches_torchvision_exactly(small):
    doms = rotated_domains(small, angles=(45,), seed=0, disjoint=False)
    expected = TF.rotate(small.images[7], 45.0, interpolation=InterpolationMode.BILINEAR, fill=0)
    assert torch.equal(doms["rot45"].images[7], expected) and len(doms["rot45"]) == len(small)


def test_color_domains(small):
    doms = color_domains(small, seed=1)
    assert list(doms) == ["hue0-c1", "hue90-c0.8", "hue180-c0.6", "hue270-c0.4"]
    for dom in doms.values():
        assert dom.image_shape == (3, 28, 28) and dom.images.dtype == torch.uint8
    red = doms["hue0-c1"].images.float().mean((0, 2, 3))
    assert red[0] > red[1] and red[0] > red[2]  # red tint
    # lower contrast -> smaller spread between background and stroke
    spread = {k: float(d.images.float().amax((1, 2, 3)).mean() - d.images.float().amin((1, 2, 3)).mean())
              for k, d in doms.items()}  # fmt: skip
    assert spread["hue0-c1"] > spread["hue270-c0.4"]
    assert torch.equal(color_domains(small, seed=1)["hue90-c0.8"].images, doms["hue90-c0.8"].images)
    with pytest.raises(DataError):
        color_domains(small, hues=(0.1,), contrasts=(1.0, 0.5))


def test_textures_load_offline():
    textures = load_textures()
    assert set(textures) == set(TEXTURE_FAMILIES) == {"brick", "grass", "gravel", "photo"}
    for texs in textures.values():
        assert all(t.dtype == torch.uint8 and t.shape[0] == 3 and min(t.shape[1:]) >= 256 for t in texs)
    with pytest.raises(DataError, match="unknown texture family"):
        load_textures(["marble"])


def test_texture_background_domains(small):
    doms = texture_background_domains(small, seed=2)
    assert list(doms) == ["brick", "grass", "gravel", "photo"] and sum(len(d) for d in doms.values()) == len(small)
    textures = load_textures()
    for (fam, dom), share in zip(doms.items(), domain_shares(len(small), 4, seed=2)):
        assert dom.image_shape == (3, 28, 28) and dom.name == fam and torch.equal(dom.labels, small.labels[share])
        bg = sample_backgrounds(textures[fam], len(dom), (28, 28), derive_seed(2, "texture", fam))
        fg = small.images[share]
        alpha0 = (fg == 0).expand(-1, 3, -1, -1)
        assert alpha0.float().mean() > 0.5
        assert torch.equal(dom.images[alpha0], bg[alpha0])  # background pixels are the texture crop
        full = (fg == 255).expand(-1, 3, -1, -1)
        assert (dom.images[full] == 255).all()  # full-intensity strokes are the (white) foreground
    again = texture_background_domains(small, seed=2)
    assert all(torch.equal(again[k].images, doms[k].images) for k in doms)
    other = texture_background_domains(small, families=["brick"], seed=5)
    assert list(other) == ["brick"] and len(other["brick"]) == len(small)


def test_backgrounds_are_exact_texture_windows():
    tex = torch.zeros(3, 200, 160, dtype=torch.uint8)
    tex[0] = torch.arange(160)[None, :]  # channel 0 encodes x, channel 1 encodes y
    tex[1] = torch.arange(200)[:, None]
    bg = sample_backgrounds([tex], 40, (28, 28), seed=0, crop_scale=(28 / 160, 28 / 160))
    for crop in bg:
        x0, y0 = int(crop[0, 0, 0]), int(crop[1, 0, 0])
        assert torch.equal(crop, tex[:, y0 : y0 + 28, x0 : x0 + 28])
    zoom = sample_backgrounds([tex], 40, (28, 28), seed=0)
    assert zoom.shape == (40, 3, 28, 28) and int(zoom[:, 0].max()) < 160 and int(zoom[:, 1].max()) < 200


def test_composite_alpha():
    fg = torch.tensor([0, 255, 128], dtype=torch.uint8).view(3, 1, 1, 1)
    bg = torch.full((3, 3, 1, 1), 100, dtype=torch.uint8)
    out = composite(fg, bg, color=(255, 0, 0))
    assert out[0].flatten().tolist() == [100, 100, 100] and out[1].flatten().tolist() == [255, 0, 0]
    assert out[2].flatten().tolist() == [178, 50, 50]


def test_concat_domains(small):
    doms = rotated_domains(small, angles=(0, 90), seed=0)
    joined = concat_arrays(list(doms.values()), name="all")
    assert len(joined) == len(small) and joined.name == "all"
