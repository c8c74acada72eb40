"""One UDA step: gradient routing of every loss term, frozen teacher, discriminator updates, heads, exact resume."""

import shutil

import pytest
import torch

from frugalvision.data.streets import StreetScenes
from frugalvision.engine import Engine, FabricConfig
from frugalvision.errors import ConfigError
from frugalvision.methods.muhdi.api import fit_step, step_loop
from frugalvision.methods.muhdi.functional import bce_with_constant
from frugalvision.methods.muhdi.model import (
    AGNOSTIC,
    SPECIALIST,
    export_agnostic,
    frozen_call,
    with_branches,
)
from frugalvision.methods.muhdi.task import PairedDomains, StepSettings, UdaStep
from frugalvision.nn.deeplab import deeplab_v2

H, W = 32, 32


@pytest.fixture(scope="module")
def domains():
    return StreetScenes.render("synthetic", 8, H, W, seed=0), StreetScenes.render("dusty", 8, H, W, seed=0)


def _previous(branches=(AGNOSTIC,), seed=0):
    torch.manual_seed(seed)
    return deeplab_v2("tiny", 7, branches, widths=(8, 16, 16, 32), dilations=(1, 2)).eval()


def _batch(domains, n=2):
    source, target = domains
    return {"source": source.images[:n], "source_labels": source.labels[:n], "target": target.images[:n]}


def _grad_groups(model, task):
    seg = model.segmenter
    groups = {
        "backbone": list(seg.backbone_parameters()),
        "agnostic": [p for p in seg.classifiers[AGNOSTIC].parameters()],
        "specialist": [p for p in seg.classifiers[SPECIALIST].parameters()] if SPECIALIST in seg.branches else [],
        "discriminators": list(model.discriminators.parameters()) if model.discriminators is not None else [],
        "teacher": list(task.teacher.parameters()) if task.teacher is not None else [],
    }
    return {k: any(p.grad is not None and p.grad.abs().sum() > 0 for p in ps) for k, ps in groups.items() if ps}


def _routing(task, batch):
    torch.manual_seed(1)
    model = task.build_model().train()
    out = model(batch["source"], batch["target"], train=True)
    terms = task.loss_terms(out, batch)
    routes = {}
    for name, term in terms.items():
        for p in [*model.parameters(), *(task.teacher.parameters() if task.teacher is not None else [])]:
            p.grad = None
        term.backward(retain_graph=True)
        routes[name] = _grad_groups(model, task)
    return routes


def test_muhdi_gradient_routing_of_every_term(domains):
    settings = StepSettings(method="muhdi", lambda_pod=1.0, lambda_kd=1.0)
    task = UdaStep(settings, *domains, previous=_previous(), discriminator_width=8)
    routes = _routing(task, _batch(domains))
    no = dict(backbone=False, agnostic=False, specialist=False, discriminators=False, teacher=False)
    assert routes["seg"] == {**no, "backbone": True, "specialist": True}
    assert routes["adv"] == {**no, "backbone": True, "specialist": True}  # frozen discriminators
    assert routes["disc"] == {**no, "discriminators": True}  # detached maps: nothing reaches the segmenter
    assert routes["pod"] == {**no, "backbone": True}
    assert routes["kd"] == {**no, "backbone": True, "agnostic": True}
    assert routes["kt"] == {**no, "backbone": True, "agnostic": True}  # the specialist is detached


def test_advent_routing_and_both_discriminators_see_source_and_target(domains):
    task = UdaStep(StepSettings(method="advent"), *domains, previous=_previous(), discriminator_width=8)
    routes = _routing(task, _batch(domains))
    assert routes["seg"] == {"backbone": True, "agnostic": True, "discriminators": False}
    assert routes["adv"] == {"backbone": True, "agnostic": True, "discriminators": False}
    assert routes["disc"] == {"backbone": False, "agnostic": False, "discriminators": True}
    model = task.build_model().train()
    batch = _batch(domains)
    out = model(batch["source"], batch["target"], train=True)
    for level in ("main", "aux"):  # the official baseline never trains D_aux on source images; ours does
        for domain_key, label in (("d_source", 0.0), ("d_target", 1.0)):
            model.zero_grad()
            bce_with_constant(out[domain_key][level], label).backward(retain_graph=True)
            assert model.discriminators[level][0].weight.grad.abs().sum() > 0, (level, domain_key)


def test_minent_reaches_the_adapted_branch_only(domains):
    task = UdaStep(
        StepSettings(method="advent", uda="advent+minent"), *domains, previous=_previous(), discriminator_width=8
    )
    routes = _routing(task, _batch(domains))
    assert routes["ent"] == {"backbone": True, "agnostic": True, "discriminators": False}
    only = UdaStep(StepSettings(method="advent", uda="minent"), *domains, previous=_previous())
    assert set(_routing(only, _batch(domains))) == {"seg", "ent"}


def test_frozen_call_passes_gradients_to_inputs_only():
    disc = torch.nn.Conv2d(2, 1, 3)
    x = torch.rand(1, 2, 5, 5, requires_grad=True)
    frozen_call(disc, x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and disc.weight.grad is None
    assert torch.allclose(frozen_call(disc, x), disc(x))


def test_teacher_is_frozen_and_unchanged_by_training(domains):
    previous = _previous()
    before = {k: v.clone() for k, v in previous.state_dict().items()}
    task = UdaStep(StepSettings(method="muhdi"), *domains, previous=previous, discriminator_width=8)
    engine = Engine(FabricConfig(accelerator="cpu", devices="1"), progress=False)
    adapted = fit_step(lambda t, lp: engine.fit(t, lp), task, step_loop(2, 2, 0.05))
    assert not task.teacher.training
    assert all(not p.requires_grad and p.grad is None for p in task.teacher.parameters())
    teacher_state = task.teacher.state_dict()
    for key, value in teacher_state.items():
        assert torch.equal(value, before[key]), key
    assert all(torch.equal(v, before[k]) for k, v in previous.state_dict().items())  # the caller's model too
    assert not torch.equal(adapted.model.state_dict()["backbone.stem.0.weight"], before["backbone.stem.0.weight"])


def test_head_initialisation_across_steps():
    advent = _previous(seed=1)
    step2, origin = with_branches(advent, (AGNOSTIC, SPECIALIST))
    assert origin == {AGNOSTIC: "previous agnostic", SPECIALIST: "fresh"}
    assert torch.equal(
        step2.classifiers[AGNOSTIC]["main"].convs[0].weight, advent.classifiers[AGNOSTIC]["main"].convs[0].weight
    )
    assert not torch.equal(
        step2.classifiers[SPECIALIST]["main"].convs[0].weight, advent.classifiers[AGNOSTIC]["main"].convs[0].weight
    )
    muhdi = _previous((AGNOSTIC, SPECIALIST), seed=2)
    carry, origin = with_branches(muhdi, (AGNOSTIC, SPECIALIST), "carry")
    official, official_origin = with_branches(muhdi, (AGNOSTIC, SPECIALIST), "official")
    weight = lambda m, b: m.classifiers[b]["aux"].convs[1].weight  # noqa: E731
    assert torch.equal(weight(carry, AGNOSTIC), weight(muhdi, AGNOSTIC)) and origin[AGNOSTIC] == "previous agnostic"
    assert torch.equal(weight(official, AGNOSTIC), weight(muhdi, SPECIALIST))
    assert official_origin[AGNOSTIC] == "previous specialist"
    assert torch.equal(weight(official, SPECIALIST), weight(muhdi, SPECIALIST))
    assert torch.equal(carry.backbone.stem[0].weight, muhdi.backbone.stem[0].weight)
    warm, warm_origin = with_branches(advent, (AGNOSTIC, SPECIALIST), new_branch="agnostic")
    assert warm_origin == {AGNOSTIC: "previous agnostic", SPECIALIST: "previous agnostic"}
    assert torch.equal(weight(warm, SPECIALIST), weight(advent, AGNOSTIC))
    assert weight(warm, SPECIALIST) is not weight(warm, AGNOSTIC)  # copies, trained apart
    with pytest.raises(ConfigError):
        with_branches(muhdi, (AGNOSTIC,), "nope")  # type: ignore[arg-type]


def test_exported_model_keeps_only_the_agnostic_main_head():
    model = _previous((AGNOSTIC, SPECIALIST), seed=3)
    exported = export_agnostic(model)
    assert exported.branches == (AGNOSTIC,) and set(exported.classifiers[AGNOSTIC]) == {"main"}
    assert not any("specialist" in k or "aux" in k for k in exported.state_dict())
    x = torch.rand(2, 3, H, W)
    with torch.no_grad():
        main = model.forward_all(x).logits[AGNOSTIC][1]
        expected = torch.nn.functional.interpolate(main, size=(H, W), mode="bilinear", align_corners=True)
        assert torch.allclose(exported(x), expected, atol=1e-6)


def test_paired_domains_draw_fresh_pairs_each_epoch(domains):
    pairs = PairedDomains(domains[0], StreetScenes.render("city", 3, H, W, seed=0))
    first, second = pairs.order(0, 7), pairs.order(1, 7)
    assert len(first) == 8 and not torch.equal(first, second) and torch.equal(first, pairs.order(0, 7))
    sources, targets = first // 3, first % 3
    assert sorted(sources.tolist()) == list(range(8)) and set(targets.tolist()) == {0, 1, 2}
    item = pairs[int(first[0])]
    assert set(item) == {"source", "source_labels", "target"}  # no target labels in UDA


def test_settings_and_task_validation(domains):
    with pytest.raises(ConfigError, match="previous model"):
        UdaStep(StepSettings(method="muhdi"), *domains, scratch=lambda: _previous())
    with pytest.raises(ConfigError, match="uda"):
        StepSettings(uda="dann").validate()
    with pytest.raises(ConfigError, match="lambda_kt"):
        StepSettings(lambda_kt=-1).validate()


def test_resuming_mid_step_reproduces_the_uninterrupted_run(domains, tmp_path):
    engine = Engine(FabricConfig(accelerator="cpu", devices="1"), progress=False)

    def run(run_dir, resume=False):
        task = UdaStep(StepSettings(method="muhdi"), *domains, previous=_previous(), discriminator_width=8)
        loop = step_loop(4, 2, 0.05, ckpt_every=2, log_every=1, ckpt_every_s=0.0)
        return engine.fit(task, loop, run_dir=run_dir, resume=resume)

    full = run(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    checkpoints = tmp_path / "b" / "checkpoints"
    shutil.rmtree(checkpoints / "step_00000004")
    (checkpoints / "latest").write_text("step_00000002")
    resumed = run(tmp_path / "b", resume=True)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    losses = lambda r: [h["loss"] for h in r.history if "loss" in h]  # noqa: E731
    assert losses(full)[2:] == losses(resumed)[2:]


def test_per_image_confusion_matrices_sum_to_the_shared_metric():
    from frugalvision.methods.muhdi.task import confusion_per_sample, segmentation_metrics
    from frugalvision.metrics import confusion_matrix

    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 7, (3, 5, 6), generator=g)
    labels = torch.randint(0, 7, (3, 5, 6), generator=g)
    labels[0, :2] = 255
    per_image = confusion_per_sample(pred, labels, 7)
    assert per_image.shape == (3, 7, 7)
    for i in range(3):
        assert torch.equal(per_image[i], confusion_matrix(pred[i], labels[i], 7))
    brute = torch.zeros(7, 7, dtype=torch.long)
    for t, p in zip(labels.flatten().tolist(), pred.flatten().tolist()):
        if t != 255:
            brute[t, p] += 1
    assert torch.equal(per_image.sum(0), brute)
    metrics = segmentation_metrics(brute)
    iou = brute.diag().double() / (brute.sum(0) + brute.sum(1) - brute.diag()).double()
    assert metrics["miou"] == pytest.approx(iou.mean().item()) and metrics["iou_flat"] == pytest.approx(iou[0].item())


def test_discriminators_are_restored_and_steps_are_deterministic(domains):
    from frugalvision.methods.muhdi.api import adapt_to_next_domain

    kwargs = {"method": "advent", "steps": 2, "batch_size": 2, "lr": 0.05, "seed": 3, "discriminator_width": 8}
    first = adapt_to_next_domain(_previous(), *domains, **kwargs)
    task = UdaStep(StepSettings(method="muhdi"), *domains, first.model, None, first.discriminators.state_dict(), 8)
    restored = task.build_model().discriminators
    for key, value in first.discriminators.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)
    again = adapt_to_next_domain(_previous(), *domains, **kwargs)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
