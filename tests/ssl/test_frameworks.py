"""Supervised, Mean Teacher and FixMatch losses (with each plug-in) against brute-force recomputation."""

from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from frugalvision.ssl import FixMatch, MeanTeacher, MixUp, SemanticMix, Supervised, composite_mix


def identity(x):
    return x


def _model(seed=0, classes=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16), nn.Tanh(), nn.Linear(16, classes))


def _batches(n_labeled=4, n_unlabeled=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labeled = {
        "image": torch.rand(n_labeled, 3, 4, 4, generator=gen),
        "label": torch.randint(4, (n_labeled,), generator=gen),
    }
    unlabeled = {
        "image": torch.rand(n_unlabeled, 3, 4, 4, generator=gen),
        "label": torch.full((n_unlabeled,), -1),
        "alpha": torch.rand(n_unlabeled, 1, 4, 4, generator=gen),
        "foreground": torch.rand(n_unlabeled, 3, 4, 4, generator=gen),
        "background": torch.rand(n_unlabeled, 3, 4, 4, generator=gen),
    }
    return labeled, unlabeled


@dataclass(frozen=True)
class FixedMixUp(MixUp):
    """MixUp with a fixed lambda that records its permutation."""

    record: list = field(default_factory=list)

    def __call__(self, images, perm):
        self.record.append(perm.clone())
        return 0.3 * images + 0.7 * images[perm], 0.3


class RecordingMixer:
    def __init__(self):
        self.calls = []

    def __call__(self, semantic, context):
        self.calls.append((semantic, context))
        return composite_mix(semantic, context)


def test_fixmatch_loss_equals_brute_force_with_one_concatenated_forward():
    model = _model()
    labeled, unlabeled = _batches()
    strong = lambda x: x.flip(-1) * 0.5  # noqa: E731 - a deterministic stand-in for RandAugment
    framework = FixMatch(threshold=0.3, lambda_u=2.0, weak=identity, strong=strong)
    loss, logs = framework.loss(model, labeled, unlabeled, step=0)
    logits_x, logits_w, logits_s = model(labeled["image"]), model(unlabeled["image"]), model(strong(unlabeled["image"]))
    expected = F.cross_entropy(logits_x, labeled["label"])
    unlabeled_term = 0.0
    for i in range(8):
        p = logits_w[i].softmax(0)
        if p.max() >= 0.3:
            unlabeled_term += F.cross_entropy(logits_s[i : i + 1], p.argmax().view(1))
    expected = expected + 2.0 * unlabeled_term / 8
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert 0 < logs["mask"] < 1


def test_fixmatch_above_one_threshold_gives_the_supervised_gradient():
    labeled, unlabeled = _batches()
    model = _model()
    loss, _ = FixMatch(threshold=1.01, weak=identity, strong=identity).loss(model, labeled, unlabeled, 0)
    loss.backward()
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    F.cross_entropy(model(labeled["image"]), labeled["label"]).backward()
    for got, want in zip(ours, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want)


def test_fixmatch_between_class_mix_masks_unless_both_parents_are_confident():
    model = _model()
    labeled, unlabeled = _batches()
    plugin = FixedMixUp(weight=1.5)
    framework = FixMatch(threshold=0.3, weak=identity, strong=identity)
    loss, logs = framework.loss(model, labeled, unlabeled, 0, plugin)
    base, _ = framework.loss(model, labeled, unlabeled, 0)
    perm = plugin.record[-1]
    probs = model(unlabeled["image"]).softmax(1)
    conf, hard = probs.max(1)
    mask = (conf >= 0.3).float()
    mixed = model(0.3 * unlabeled["image"] + 0.7 * unlabeled["image"][perm])
    target = 0.3 * F.one_hot(hard, 4) + 0.7 * F.one_hot(hard[perm], 4)
    brute = sum(float(mask[i] * mask[perm[i]]) * -(target[i] * mixed[i].log_softmax(0)).sum() for i in range(8)) / 8
    assert logs["loss_mix"] == pytest.approx(brute.item(), rel=1e-5)
    assert loss.item() == pytest.approx(base.item() + 1.5 * brute.item(), rel=1e-5)


def test_fixmatch_semantic_mix_uses_the_semantic_parents_pseudo_labels_and_mask():
    model = _model()
    labeled, unlabeled = _batches()
    mixer = RecordingMixer()
    framework = FixMatch(threshold=0.3, weak=identity, strong=identity)
    _, logs = framework.loss(model, labeled, unlabeled, 0, SemanticMix(mixer))
    semantic, context = mixer.calls[-1]
    assert torch.equal(semantic["image"], unlabeled["image"])
    mixes = unlabeled["alpha"] * unlabeled["foreground"] + (1 - unlabeled["alpha"]) * context["background"]
    probs = model(unlabeled["image"]).softmax(1)
    keep = (probs.max(1).values >= 0.3).float()
    per = F.cross_entropy(model(mixes.clamp(0, 1)), probs.argmax(1), reduction="none")
    assert logs["loss_mix"] == pytest.approx((per * keep).mean().item(), rel=1e-5)


def test_supervised_semantic_mix_keeps_the_labeled_parents_label():
    model = _model()
    labeled, unlabeled = _batches()
    labeled = {**labeled, **{k: unlabeled[k][:4] for k in ("alpha", "foreground", "background")}}
    mixer = RecordingMixer()
    loss, logs = Supervised(weak=identity).loss(model, labeled, unlabeled, 0, SemanticMix(mixer, weight=0.5))
    semantic, context = mixer.calls[-1]
    mixes = composite_mix(semantic, context).clamp(0, 1)
    expected_mix = F.cross_entropy(model(mixes), labeled["label"])
    assert logs["loss_mix"] == pytest.approx(expected_mix.item(), rel=1e-5)
    base = F.cross_entropy(model(labeled["image"]), labeled["label"])
    assert loss.item() == pytest.approx(base.item() + 0.5 * expected_mix.item(), rel=1e-5)


def test_mean_teacher_loss_equals_the_official_formula():
    model = _model()
    labeled, unlabeled = _batches()
    framework = MeanTeacher(alpha=0.97, consistency=10.0, rampup=4, weak=identity)
    framework.setup(model)
    with torch.no_grad():
        for p in framework.teacher.module.parameters():
            p.add_(0.1)
    loss, logs = framework.loss(model, labeled, unlabeled, step=2)
    images = torch.cat([labeled["image"], unlabeled["image"]])
    student, teacher = model(images), framework.teacher.module(images)
    class_cost = F.cross_entropy(student[:4], labeled["label"], reduction="sum") / 12
    consistency = ((student.softmax(1) - teacher.softmax(1)) ** 2).sum() / 4 / 12
    weight = 10.0 * torch.exp(torch.tensor(-5 * (1 - 2 / 4) ** 2)).item()
    assert logs["cons_weight"] == pytest.approx(weight)
    assert loss.item() == pytest.approx((class_cost + weight * consistency).item(), rel=1e-5)


def test_mean_teacher_ict_target_mixes_teacher_logits():
    model = _model()
    labeled, unlabeled = _batches()
    framework = MeanTeacher(consistency=1.0, rampup=0, weak=identity)
    framework.setup(model)
    plugin = FixedMixUp()
    _, logs = framework.loss(model, labeled, unlabeled, 0, plugin)
    perm = plugin.record[-1]
    u = unlabeled["image"]
    z = framework.teacher.module(u)
    target = (0.3 * z + 0.7 * z[perm]).softmax(1)  # ICT: softmax of mixed logits
    student = model(0.3 * u + 0.7 * u[perm]).softmax(1)
    assert logs["loss_mix"] == pytest.approx((((student - target) ** 2).sum(1) / 4).mean().item(), rel=1e-5)


def test_mean_teacher_after_step_moves_the_teacher_and_checkpoints_it():
    model = _model()
    framework = MeanTeacher(alpha=0.9)
    framework.setup(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    framework.after_step(model, 1)
    for t, s in zip(framework.teacher.module.parameters(), model.parameters()):
        torch.testing.assert_close(t, s.detach() - 0.5)
    other = MeanTeacher()
    other.setup(_model(5))
    other.load_state_dict(framework.state_dict())
    for a, b in zip(other.teacher.module.parameters(), framework.teacher.module.parameters()):
        assert torch.equal(a, b)


def test_two_head_mean_teacher_adds_the_logit_distance():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.a, self.b = nn.Flatten(), nn.Linear(48, 4), nn.Linear(48, 4)

        def forward(self, x):
            h = self.body(x)
            return self.a(h), self.b(h)

    torch.manual_seed(0)
    model = TwoHeads()
    labeled, unlabeled = _batches()
    framework = MeanTeacher(consistency=0.0, logit_distance_cost=0.01, weak=identity)
    framework.setup(model)
    loss, logs = framework.loss(model, labeled, unlabeled, 0)
    images = torch.cat([labeled["image"], unlabeled["image"]])
    a, b = model(images)
    distance = ((a - b) ** 2).sum() / 4 / 12
    assert logs["loss_res"] == pytest.approx(distance.item(), rel=1e-5)
    class_cost = F.cross_entropy(a[:4], labeled["label"], reduction="sum") / 12
    assert loss.item() == pytest.approx((class_cost + 0.01 * distance).item(), rel=1e-5)
