"""Downstream heads, losses and metrics against brute-force references; Grad-CAM against finite differences."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from frugalvision.errors import DataError
from frugalvision.methods.vicha.downstream import (
    answer_targets,
    box_iou,
    build_answer_vocabulary,
    distill_classification_loss,
    gradcam_map,
    grounding_accuracy,
    itm_rerank,
    multi_caption_recall,
    retrieval_itc_loss,
    score_proposals,
    vqa_accuracy,
    weighted_answer_loss,
)
from frugalvision.methods.vicha.finetuning import FinetuneTask, gradcam_patches
from frugalvision.methods.vicha.functional import sample_negatives
from frugalvision.methods.vicha.heads import NLVRClassifier, VLClassifier, gradcam_layer
from frugalvision.methods.vicha.model import ModelConfig, ViCHAModel
from frugalvision.methods.vicha.task_data import TaskBatch

TINY = {
    "vocab_size": 30,
    "image_size": 32,
    "patch_size": 16,
    "vision_width": 16,
    "vision_depth": 2,
    "vision_heads": 2,
    "text_width": 16,
    "text_heads": 2,
    "text_intermediate": 32,
    "text_layers": 2,
    "fusion_layers": 2,
    "embed_dim": 8,
    "dropout": 0.0,
}


def _model(**changes):
    torch.manual_seed(0)
    return ViCHAModel(ModelConfig(**{**TINY, **changes}))


def _batch(n=3, images=1, seed=0, targets=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3, 32, 32) if images == 1 else (n, images, 3, 32, 32)
    text = torch.randint(5, 30, (n, 6), generator=g)
    text[:, 0], text[:, -1] = 2, 3
    text[0, -2:] = 0  # one padded caption
    return TaskBatch(torch.randn(*shape, generator=g), text, None, targets if targets is not None else torch.arange(n))


# ------------------------------------------------------------------------------------------------ losses
def test_retrieval_itc_spreads_the_target_over_every_caption_of_the_same_image():
    g = torch.Generator().manual_seed(1)
    image, text = F.normalize(torch.randn(4, 5, generator=g), dim=1), F.normalize(torch.randn(4, 5, generator=g), dim=1)
    ids = torch.tensor([7, 7, 3, 9])
    loss = retrieval_itc_loss(image, text, ids, 0.1)
    total = 0.0
    for a, b in ((image, text), (text, image)):
        for i in range(4):
            positives = [j for j in range(4) if ids[j] == ids[i]]
            log_p = F.log_softmax(a[i] @ b.T / 0.1, 0)
            total += -sum(log_p[j] for j in positives) / len(positives) / 4
    assert torch.allclose(loss, total / 2, atol=1e-6)
    image_m, text_m = F.normalize(torch.randn(4, 5, generator=g), dim=1), F.normalize(torch.randn(4, 5, generator=g), 1)
    mixed = retrieval_itc_loss(image, text, ids, 0.1, image_m, text_m, alpha=0.4)
    brute = 0.0
    for a, b, am, bm in ((image, text, image_m, text_m), (text, image, text_m, image_m)):
        for i in range(4):
            hard = torch.tensor([float(ids[j] == ids[i]) for j in range(4)])
            target = 0.4 * F.softmax(am[i] @ bm.T / 0.1, 0) + 0.6 * hard / hard.sum()
            brute += -(target * F.log_softmax(a[i] @ b.T / 0.1, 0)).sum() / 4
    assert torch.allclose(mixed, brute / 2, atol=1e-6)


def test_itm_negatives_never_come_from_the_same_image():
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([0, 0, 1, 1, 2])
    same = ids[:, None] == ids[None, :]
    for _ in range(50):
        picks = sample_negatives(torch.randn(5, 5, generator=g) * 20, generator=g, exclude=same)
        assert all(ids[int(p)] != ids[i] for i, p in enumerate(picks))
    everything = torch.ones(2, 2, dtype=torch.bool)  # a batch of one image: the fallback is any other column
    assert sample_negatives(torch.zeros(2, 2), exclude=everything).tolist() == [1, 0]


def test_classification_losses_equal_their_formulas():
    g = torch.Generator().manual_seed(2)
    logits, logits_m = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    targets = torch.tensor([0, 2, 1, 2])
    hard = -np.mean([F.log_softmax(logits[i], 0)[targets[i]].item() for i in range(4)])
    soft = -np.mean([(F.softmax(logits_m[i], 0) * F.log_softmax(logits[i], 0)).sum().item() for i in range(4)])
    assert math.isclose(distill_classification_loss(logits, targets, logits_m, 0.4).item(), 0.6 * hard + 0.4 * soft,
                        rel_tol=1e-5)  # fmt: skip
    assert math.isclose(distill_classification_loss(logits, targets, None, 0.4).item(), hard, rel_tol=1e-5)
    weights = answer_targets([["yes"] * 7 + ["no"] * 3, ["red"], ["blue", "zebra"]], ["yes", "no", "red", "blue"])
    assert torch.allclose(weights, torch.tensor([[0.7, 0.3, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.5]]))
    vqa_logits = torch.randn(3, 4, generator=g)
    brute = -np.mean([sum(weights[i, a] * F.log_softmax(vqa_logits[i], 0)[a] for a in range(4)) for i in range(3)])
    assert math.isclose(weighted_answer_loss(vqa_logits, weights).item(), float(brute), rel_tol=1e-5)


def test_the_heads_losses_in_the_task_match_a_hand_computation():
    model = VLClassifier(_model(), classes=3).eval()
    batch = _batch(targets=torch.tensor([2, 0, 1]))
    task = FinetuneTask("ve", lambda: model, None)
    loss, _ = task.training_step(model, batch, 0)
    assert torch.allclose(loss, F.cross_entropy(model(batch), batch.targets))
    vqa = VLClassifier(_model(), classes=4).eval()
    weights = answer_targets([["a"], ["b", "c"], ["d"]], ["a", "b", "c", "d"])
    vqa_batch = batch._replace(targets=weights)
    loss, _ = FinetuneTask("vqa", lambda: vqa, None).training_step(vqa, vqa_batch, 0)
    assert torch.allclose(loss, -(F.log_softmax(vqa(vqa_batch), 1) * weights).sum(1).mean())


def test_nlvr_doubles_each_fusion_layer_and_shares_its_cross_attention_keys_and_values():
    base = _model()
    pretrained = {k: v.clone() for k, v in base.text.fusion_layers.state_dict().items()}
    model = NLVRClassifier(base).eval()
    assert len(model.fusion.first) == len(model.fusion.second) == 2 and len(base.text.fusion_layers) == 0
    for a, b in zip(model.fusion.first, model.fusion.second, strict=True):
        assert a.cross_key.weight is b.cross_key.weight and a.cross_value.weight is b.cross_value.weight
        assert a.cross_query.weight is not b.cross_query.weight
    assert torch.equal(model.fusion.second[1].ffn_in.weight, pretrained["1.ffn_in.weight"])
    batch = _batch(images=2, targets=torch.tensor([1, 0, 1]))
    assert model(batch).shape == (3, 2)
    swapped = batch._replace(images=batch.images.flip(1))
    assert not torch.allclose(model(batch), model(swapped))  # left and right are not interchangeable
    names = [n for n, _ in model.named_parameters()]
    assert len(names) == len(set(names)) and not any("mim" in n or "itm" in n for n in names)


# ------------------------------------------------------------------------------------------------ retrieval metrics
def test_itm_rerank_scores_only_the_top_k_and_recall_handles_several_captions_per_image():
    sim = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.7, 0.1]])
    calls = []

    def score(q, c):
        calls.append(list(zip(q.tolist(), c.tolist(), strict=True)))
        return (10 * q + c).float()

    out = itm_rerank(sim, 2, score)
    assert sorted(calls[0]) == [(0, 0), (0, 2), (1, 1), (1, 2)]
    assert out[0, 0] == 0 and out[0, 2] == 2 and out[1, 1] == 11 and out[0, 1] == -100
    img2txt, txt2img = [[0, 1], [2, 3]], [0, 0, 1, 1]
    score_i2t = torch.tensor([[0.1, 0.9, 0.5, 0.2], [0.8, 0.1, 0.3, 0.2]])
    score_t2i = score_i2t.T.contiguous()
    metrics = multi_caption_recall(score_i2t, score_t2i, img2txt, txt2img)
    brute_tr = [min(1 + int((score_i2t[i] > score_i2t[i, j]).sum()) for j in img2txt[i]) for i in range(2)]
    brute_ir = [1 + int((score_t2i[j] > score_t2i[j, txt2img[j]]).sum()) for j in range(4)]
    assert metrics["tr_r1"] == np.mean([r <= 1 for r in brute_tr]) == 0.5
    assert metrics["ir_r1"] == np.mean([r <= 1 for r in brute_ir]) and metrics["ir_r5"] == 1.0


# ------------------------------------------------------------------------------------------------ VQA
def test_the_answer_vocabulary_ranks_by_count_then_name():
    answers = [["yes"] * 10, ["no"] * 10, ["red"] * 10, ["yes"] * 10, ["blue", "red"]]
    assert build_answer_vocabulary(answers) == ["yes", "red", "no", "blue"]
    assert build_answer_vocabulary(answers, min_count=11) == ["yes", "red"]
    assert build_answer_vocabulary(answers, max_size=2) == ["yes", "red"]
    assert vqa_accuracy("red", ["red"] * 10) == 1.0 and vqa_accuracy("red", ["red", "red"] + ["blue"] * 8) == 2 / 3


# ------------------------------------------------------------------------------------------------ grounding
def _pixels(box):
    x, y, w, h = box
    return {(i, j) for i in range(x, x + w) for j in range(y, y + h)}


def test_box_iou_equals_the_pixel_set_iou_including_one_pixel_overlaps():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = ([int(v) for v in rng.integers(0, 8, 2)] + [int(v) for v in rng.integers(1, 6, 2)] for _ in range(2))
        pa, pb = _pixels(a), _pixels(b)
        assert math.isclose(box_iou(a, b), len(pa & pb) / len(pa | pb))
    assert box_iou((0, 0, 3, 3), (2, 0, 3, 3)) == 3 / 15  # one shared column: the official formula gives 0
    assert grounding_accuracy([(0, 0, 4, 4), (0, 0, 4, 4)], [(0, 0, 4, 4), (3, 3, 4, 4)]) == 0.5


def test_proposals_are_scored_by_the_resized_map_mass_over_sqrt_area():
    cam = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    boxes = [(0, 0, 10, 10), (16, 8, 8, 8), (0, 0, 24, 24)]
    mask = F.interpolate(cam[None, None], size=(24, 24), mode="bicubic", align_corners=False)[0, 0]
    scores = [float(mask[y : y + h, x : x + w].sum()) / (w * h) ** 0.5 for x, y, w, h in boxes]
    assert score_proposals(cam, (24, 24), boxes) == int(np.argmax(scores)) == 1
    with pytest.raises(DataError, match="no box proposals"):
        score_proposals(cam, (24, 24), [])


def test_gradcam_equals_a_finite_difference_check_on_a_tiny_model():
    torch.manual_seed(0)
    model = _model().double().eval()
    batch = _batch(n=2)
    batch = batch._replace(images=batch.images.double())
    layer = gradcam_layer(model)
    layer.record_cross_attention = True
    cam = gradcam_patches(model, batch, torch.device("cpu"), layer)
    probs = layer.cross_attention.detach()
    layer.record_cross_attention = False

    def score(offset):
        layer.cross_attention_offset = offset
        with torch.no_grad():
            image, text = model.encode_image(batch.images), model.encode_text(batch.text_ids)
            fused = model.fuse(text.states, text.valid, image.tokens, image.valid)
            value = model.itm_logits(fused, text.valid)[:, 1].sum()
        layer.cross_attention_offset = None
        return float(value)

    grads = torch.zeros_like(probs)
    eps = 1e-6
    for index in itertools.product(*(range(s) for s in probs.shape)):
        offset = torch.zeros_like(probs)
        offset[index] = eps
        grads[index] = (score(offset) - score(-offset)) / (2 * eps)
    text_valid = batch.text_ids != 0
    expected = gradcam_map(probs, grads, text_valid)[:, 1 : 1 + model.visual.num_patches]
    assert cam.shape == (2, 4) and torch.allclose(cam, expected, atol=1e-7)
    brute = torch.zeros(2, probs.shape[-1], dtype=torch.float64)
    for n in range(2):
        tokens = [t for t in range(probs.shape[2]) if text_valid[n, t]]
        for t in tokens:
            brute[n] += (probs[n, :, t] * grads[n, :, t].clamp(min=0)).mean(0) / len(tokens)
    assert torch.allclose(expected, brute[:, 1:5], atol=1e-10)
