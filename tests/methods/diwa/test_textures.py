"""The offline benchmark on the shipped ImageNet EfficientNet-Lite0: domains, cached trunk features, the network."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from frugalvision.nn.efficientnet import efficientnet_lite0, split_efficientnet_lite0

torch.set_num_threads(1)


def test_trunk_then_top_equals_the_whole_pretrained_network() -> None:
    model = efficientnet_lite0()
    trunk, top = split_efficientnet_lite0(15)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        whole = model._avg_pooling(model.extract_features(images * 2 - 1)).flatten(1)
        torch.testing.assert_close(top.eval()(trunk.eval()(images)), whole, rtol=1e-4, atol=1e-5)
    features = trunk.features((images * 255).round().to(torch.uint8), batch_size=1)
    assert features.shape == (2, 192, 2, 2)


def test_the_shipped_weights_classify_a_real_photo_and_bad_files_are_refused(tmp_path) -> None:
    import skimage.data

    from frugalvision.errors import CheckpointError

    cat = torch.from_numpy(skimage.data.chelsea().copy()).permute(2, 0, 1).float().div(255)
    cat = torch.nn.functional.interpolate(cat[None], size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        predicted = int(efficientnet_lite0()(cat * 2 - 1).argmax())
    assert predicted in (281, 282, 285)  # tabby, tiger cat, Egyptian cat
    bad = tmp_path / "bad.pt"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="does not fit"):
        efficientnet_lite0(weights_path=bad)


def test_texture_problem_caches_features_and_builds_random_and_pretrained_tops(tmp_path) -> None:
    from frugalvision.methods.diwa.config import smoke
    from frugalvision.methods.diwa.experiment import build_problem

    config = dataclasses.replace(smoke(), per_domain_images=20)
    problem = build_problem(config, tmp_path)
    cached = list(tmp_path.glob("texture-features-*.safetensors"))
    assert len(cached) == 1
    train, val, test = problem.splits(0)
    assert len(train) == len(val) == 3 and problem.test_domain == "photo" and len(test) == 20
    assert len(train[0]) + len(val[0]) == 20 and len(val[0]) == 4
    features, label = test[0]
    assert features.shape == (192, 1, 1) and 0 <= int(label) < 10
    net = problem.build_net()
    assert net(features[None]).shape == (1, 10)
    pretrained = problem.pretrained()
    assert set(pretrained) < set(net.state_dict()) and not any(k.startswith("classifier") for k in pretrained)
    assert not torch.equal(
        pretrained["featurizer.module.head.0.weight"], net.state_dict()["featurizer.module.head.0.weight"]
    )
    again = build_problem(config, tmp_path)  # read back from the cache, same splits
    torch.testing.assert_close(again.splits(0)[2][3][0], test[3][0], rtol=0, atol=0)
    net.train()
    assert not any(m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))  # BN frozen
