"""DeepLab-V2 on torchvision ResNets: dilations, output stride, branches, feature taps, frozen BatchNorm affine."""

import pytest
import torch
import torchvision

from frugalvision.errors import ConfigError
from frugalvision.nn.deeplab import ASPPClassifier, DeepLabV2, InputNormalization, deeplab_v2, resnet_stages


def test_resnet101_stages_have_deeplab_dilations_and_output_stride_8():
    stages = resnet_stages(101)
    layer3, layer4 = stages.stages[2], stages.stages[3]
    assert len(layer3) == 23 and len(layer4) == 3
    assert {block.conv2.dilation for block in layer3} == {(2, 2)}  # every block, the first one included
    assert {block.conv2.dilation for block in layer4} == {(4, 4)}
    assert all(block.conv2.padding == block.conv2.dilation for block in layer3)
    with torch.no_grad():
        features = stages.eval()(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in features] == [(256, 16, 24), (512, 8, 12), (1024, 8, 12), (2048, 8, 12)]


def test_resnet_stages_load_a_torchvision_checkpoint(tmp_path):
    from frugalvision.engine import save_weights

    reference = torchvision.models.resnet50()
    path = save_weights(reference.state_dict(), tmp_path / "r50.safetensors")
    stages = resnet_stages(50, path)
    assert torch.equal(stages.stem[0].weight, reference.conv1.weight)
    assert torch.equal(stages.stages[3][2].conv3.weight, reference.layer4[2].conv3.weight)
    save_weights({"conv1.weight": reference.conv1.weight}, tmp_path / "bad.safetensors")
    with pytest.raises(ConfigError, match="does not hold a torchvision ResNet-50"):
        resnet_stages(50, tmp_path / "bad.safetensors")


def test_stage_outputs_equal_the_torchvision_blocks_and_pre_relu_tap_is_their_input_to_the_last_relu():
    torch.manual_seed(0)
    model = deeplab_v2("tiny", 5, widths=(8, 16, 32, 64), blocks=(2, 1, 2, 1)).eval()
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        post = model.forward_all(x).features
        model.tap = "pre_relu"
        pre = model.forward_all(x).features
        h = model.backbone.stem(model.normalize(x))
        for stage, p, q in zip(model.backbone.stages, post, pre):
            h = stage(h)  # torchvision's own block forwards
            assert torch.allclose(p, h, atol=1e-6)
            assert torch.allclose(torch.relu(q), h, atol=1e-6) and (q < 0).any()
    assert (post[3] >= 0).all()


def test_branches_heads_shapes_and_inference_output():
    model = deeplab_v2("tiny", 7, branches=("agnostic", "specialist"), dilations=(1, 2))
    out = model.forward_all(torch.rand(2, 3, 32, 64))
    assert set(out.logits) == {"agnostic", "specialist"}
    aux, main = out.logits["agnostic"]
    assert aux.shape == main.shape == (2, 7, 4, 8)  # output stride 8
    logits = model(torch.rand(2, 3, 32, 64))
    assert logits.shape == (2, 7, 32, 64)
    assert deeplab_v2("tiny", 7, maxpool=False).forward_all(torch.rand(1, 3, 32, 64)).logits["main"][1].shape[-1] == 16


def test_batchnorm_affine_is_frozen_but_statistics_follow_the_mode():
    model = deeplab_v2("tiny", 3)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not p.requires_grad for bn in bns for p in bn.parameters())
    before = bns[0].running_mean.clone()
    model.train()(torch.rand(2, 3, 32, 32))
    assert not torch.equal(before, bns[0].running_mean)  # train mode: batch statistics, running stats updated
    model.eval()
    after = bns[0].running_mean.clone()
    model(torch.rand(2, 3, 32, 32))
    assert torch.equal(after, bns[0].running_mean)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    grouped = [*model.backbone_parameters(), *model.classifier_parameters()]
    assert {id(p) for p in grouped} == trainable and len(grouped) == len(trainable)


def test_aspp_sums_dilated_convolutions():
    head = ASPPClassifier(4, 3, dilations=(1, 2))
    x = torch.randn(1, 4, 6, 6)
    expected = head.convs[0](x) + head.convs[1](x)
    assert torch.allclose(head(x), expected)
    assert head.convs[1].dilation == (2, 2) and head.convs[1].padding == (2, 2)


def test_input_normalization_modes():
    x = torch.rand(1, 3, 2, 2)
    caffe = InputNormalization("caffe")(x)
    expected_b = x[:, 2] * 255 - 104.00698793
    assert torch.allclose(caffe[:, 0], expected_b, atol=1e-4)  # BGR order, 0-255, mean subtracted
    imagenet = InputNormalization("imagenet")(x)
    assert torch.allclose(imagenet[:, 0], (x[:, 0] - 0.485) / 0.229, atol=1e-6)
    with pytest.raises(ConfigError):
        InputNormalization("nope")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        DeepLabV2(deeplab_v2("tiny", 3).backbone, 3, branches=())
