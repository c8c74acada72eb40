"""ResNet-50 on an ImageNet-layout ImageFolder: scoring, pruning through bottleneck residual groups, fine-tuning,
save/load of the pruned model (a tiny PNG fixture; the paper preset runs the same code on the real folder)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet50

from frugalvision.engine import Engine, FabricConfig, save_weights
from frugalvision.errors import DataError
from frugalvision.harness import Context, run_experiment
from frugalvision.methods.singe import config as C
from frugalvision.methods.singe import data as D
from frugalvision.methods.singe import experiment as X
from frugalvision.methods.singe import pruning as P
from frugalvision.methods.singe import task as T

torch.set_num_threads(1)
CLASSES = ("n01440764", "n01443537")


def _fixture(root: Path, per_class: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for part, count in per_class.items():
        for c, wnid in enumerate(CLASSES):
            folder = root / part / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                pixels[..., c] = 255 - 60 * (i % 2)  # a class-dependent colour
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.png")
    return root


def _pretrained(path: Path) -> Path:
    torch.manual_seed(0)
    save_weights(resnet50(weights=None, num_classes=2).state_dict(), path)
    return path


def test_imagefolder_splits_use_the_imagenet_transforms(tmp_path) -> None:  # noqa: ANN001
    root = _fixture(tmp_path / "imagenet", {"train": 5, "val": 2})
    data = D.imagefolder_splits(root, train_size=8, val_size=2, test_size=4, seed=0, image_size=32, resize_size=36)
    assert data.image_shape == (3, 32, 32) and data.num_classes == 2 and data.source == "imagenet"
    assert len(data.train) == 8 and len(data.val) == 2 and len(data.test) == 4
    image, label = data.calib[0]
    assert image.shape == (3, 32, 32) and label in (0, 1)
    torch.testing.assert_close(data.calib[0][0], image)  # evaluation transform: deterministic
    mean = torch.tensor(D.IMAGENET_MEAN).view(3, 1, 1)
    assert image.min() < 0 and (image * torch.tensor(D.IMAGENET_STD).view(3, 1, 1) + mean).max() <= 1 + 1e-6
    assert data.train[0][0].shape == (3, 32, 32)  # RandomResizedCrop
    with pytest.raises(DataError, match="train"):
        D.imagefolder_splits(tmp_path, 8, 0, 4, 0)


def test_resnet50_singe_prunes_bottleneck_groups_finetunes_and_round_trips(tmp_path) -> None:  # noqa: ANN001
    root = _fixture(tmp_path / "imagenet", {"train": 4, "val": 2})
    config = C.SingeConfig(
        dataset="imagenet",
        data_root=str(root),
        arch="resnet50",
        image_size=32,
        resize_size=36,
        train_size=8,
        val_size=0,
        test_size=4,
        pretrained=str(_pretrained(tmp_path / "r50.safetensors")),
        progress=False,
    )
    config.validate()
    data = X.load_data(config, seed=0)
    engine = Engine(FabricConfig(), progress=False)
    ctx = Context(config, engine, "singe", tmp_path / "out")
    dense = X.dense_model(ctx, data, seed=0)
    assert X.architecture(config, data) == ("torchvision_resnet50", {"num_classes": 2})
    example = torch.zeros(1, *data.image_shape)
    calib = D.calibration_batches(data.calib, 4, 0, torch.device("cpu"))
    settings = P.CriterionSettings(steps=1, rule="right")
    result = P.compute_scores(dense, example, "ig_norm", calib, settings)
    assert result.passes == 37 and "layer1.0.downsample.0" in result.scores  # 33 inner + 4 residual-stream groups
    assert result.scores["layer3.0.downsample.0"].shape == (1024,)

    model = copy.deepcopy(dense)
    keep = P.keep_counts(P.group_sizes(dense, example), 0.25)
    history = P.prune_to_counts(model, example, result.scores, keep)
    stream = model.layer1[0].conv3.out_channels
    assert stream == 192 == model.layer1[0].downsample[0].out_channels == model.layer1[2].conv3.out_channels
    assert model.layer1[0].bn3.num_features == stream and model.layer2[0].conv1.in_channels == stream
    assert model.layer4[0].conv2.out_channels == 384 and model.fc.in_features == 1536
    dense_macs, dense_params = P.count_macs_params(dense, example)
    macs, params = P.count_macs_params(model, example)
    assert macs < 0.65 * dense_macs and params < 0.65 * dense_params

    before = [p.detach().clone() for p in model.parameters()]
    lrs = T.finetune(engine, model, data.train, T.FinetuneSettings(steps=1, batch_size=4, lr=0.01), 1, 0, seed=0)
    assert len(lrs) == 1 and any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert set(X.evaluate(ctx, model, data.test)) == {"top1", "nll"}

    plan = P.PruningPlan(*X.architecture(config, data), [1, *data.image_shape], history)
    P.save_pruned(model.eval(), plan, tmp_path / "pruned")
    reloaded = P.load_pruned(tmp_path / "pruned")
    x = torch.stack([data.test[i][0] for i in range(len(data.test))])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)


@pytest.mark.slow
def test_paper_preset_runs_end_to_end_on_the_fixture(tmp_path) -> None:  # noqa: ANN001
    root = _fixture(tmp_path / "imagenet", {"train": 4, "val": 2})
    config = C.paper()
    overrides = {
        "out": str(tmp_path / "runs"),
        "seeds": (0,),
        "data_root": str(root),
        "image_size": 32,
        "resize_size": 36,
        "train_size": 8,
        "val_size": 0,
        "test_size": 4,
        "num_workers": 0,
        "dense_batch": 4,
        "pretrained": str(_pretrained(tmp_path / "r50.safetensors")),
        "calibration": 4,
        "singe": C.SingeCriterion(steps=1, rule="right"),
        "targets": (0.5,),
        "e1_criteria": ("l1", "singe"),
        "k_ablation": (),
        "e2_targets": (0.5,),
        "flow_targets": (0.5,),
        "e2_criteria": ("l1", "singe"),
        "voted_baselines": ("l1",),
        "lr_readings": ("cosine",),
        "rounds": 2,
        "finetune_steps": 2,
        "finetune_batch": 4,
        "sparse_steps": 1,
        "latency_batches": (1,),
        "latency_threads": 1,
        "progress": False,
        "threads": 1,
    }
    for key, value in overrides.items():
        setattr(config, key, value)
    doc = run_experiment(X.EXPERIMENT, config)
    assert doc["dataset"] == "imagenet" and doc["verdict"] in ("supported", "not supported", "inconclusive")
    model = P.load_pruned(tmp_path / "runs" / "singe" / "runs" / "e2-singe-entwined-cosine-0.50-seed0" / "pruned")
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
