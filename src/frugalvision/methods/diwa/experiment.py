"""DiWA experiment: M diverse fine-tunings from a shared init, weight-averaged, against ERM, MA, ENS and soups.

Registered as ``frugal run diwa --preset smoke|standard|paper``.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from frugalvision.data import ArrayDataset, DomainBedDataset
from frugalvision.data.splits import derive_seed
from frugalvision.engine import Engine, load_weights, save_weights
from frugalvision.errors import ConfigError
from frugalvision.experiment import apply_threads
from frugalvision.methods.diwa.averaging import (
    MovingAverage,
    average_state_dicts,
    buffer_keys,
    greedy_select,
    init_fingerprint,
)
from frugalvision.methods.diwa.benchmark_data import rotated_benchmark
from frugalvision.methods.diwa.config import DiwaConfig, paper, smoke, standard
from frugalvision.methods.diwa.diversity import disagreement, ratio_error
from frugalvision.methods.diwa.hparams import MildSpace, sample_hparams
from frugalvision.methods.diwa.members import MemberRecord, linear_probe, train_member
from frugalvision.methods.diwa.model import DiwaNet, gn_cnn, resnet50_frozen_bn
from frugalvision.methods.diwa.splits import domain_splits
from frugalvision.methods.diwa.task import DiwaTask, predict
from frugalvision.registry import get_method
from frugalvision.report.figures import line_plot
from frugalvision.report.schema import make_results, write_results

__all__ = ["CLAIM", "CONFIG_CLASS", "PRESETS", "benchmark", "prepare_init", "run", "train_shard"]

CONFIG_CLASS = DiwaConfig
PRESETS: dict[str, Callable[[], DiwaConfig]] = {"smoke": smoke, "standard": standard, "paper": paper}
CLAIM = (
    "Averaging the weights of M independent fine-tunings from a shared (linear-probed) initialisation with mild, "
    "diverse hyperparameters gives better out-of-distribution accuracy than the best single run and than a moving "
    "average along one run, at the inference cost of one model; averaging runs from different inits collapses."
)
INIT_FILE = "init.safetensors"
ARMS = ("erm_best", "member_mean", "ma", "ens", "diwa_uniform", "diwa_restricted", "soup_greedy")


@dataclass
class Problem:
    """What a benchmark provides: a network builder, pre-training data, and per-trial domain splits."""

    name: str
    build_net: Callable[[], DiwaNet]
    pretrain_set: Dataset | None
    splits: Callable[[int], tuple[list[Dataset], list[Dataset], Dataset]]
    test_domain: str


def _rotated_problem(config: DiwaConfig) -> Problem:
    from frugalvision.data import available_default_source

    source = available_default_source(config.data_root) if config.dataset == "auto" else config.dataset
    bench = rotated_benchmark(
        source,
        root=config.data_root,
        image_size=config.image_size,
        angles=config.angles,
        per_domain=config.per_domain_images,
        pretrain_images=config.pretrain_images,
    )
    names = list(bench.domains)
    test_name = names[config.test_domain]
    train_names = [n for n in names if n != test_name]
    in_chans, classes = bench.pretrain.image_shape[0], bench.pretrain.num_classes

    def splits(trial: int) -> tuple[list[Dataset], list[Dataset], Dataset]:
        datasets = [ArrayDataset(bench.domains[n]) for n in train_names]
        parts = domain_splits([len(d) for d in datasets], trial, config.holdout_fraction)
        train = [Subset(d, p.train.tolist()) for d, p in zip(datasets, parts)]
        val = [Subset(d, p.val.tolist()) for d, p in zip(datasets, parts)]
        return train, val, ArrayDataset(bench.domains[test_name])

    return Problem(
        name=f"rotated-{source}",
        build_net=lambda: gn_cnn(in_chans, classes, config.width),
        pretrain_set=ArrayDataset(bench.pretrain),
        splits=splits,
        test_domain=test_name,
    )


def _domainbed_problem(config: DiwaConfig) -> Problem:
    from torchvision import transforms as T

    assert config.data_root is not None
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    size = config.image_size
    eval_tf = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(mean, std)])
    train_tf = T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.7, 1.0)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.3, 0.3, 0.3, 0.3),
            T.RandomGrayscale(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    data = DomainBedDataset(
        Path(config.data_root) / config.domainbed_dataset, transform=eval_tf, skip_bad_files=config.skip_bad_files
    )
    if not 0 <= config.test_domain < len(data.domains):
        raise ConfigError(f"test_domain={config.test_domain} is outside [0, {len(data.domains)}) for {data.domains}")
    test_name = data.domains[config.test_domain]

    def splits(trial: int) -> tuple[list[Dataset], list[Dataset], Dataset]:
        split = data.leave_one_domain_out(test_name, config.holdout_fraction, seed=trial, train_transform=train_tf)
        return list(split.train_parts.values()), list(split.val_parts.values()), split.test

    return Problem(
        name=config.domainbed_dataset,
        build_net=lambda: resnet50_frozen_bn(data.num_classes, config.resnet_weights),
        pretrain_set=None,
        splits=splits,
        test_domain=test_name,
    )


def _pretrained_state(engine: Engine, config: DiwaConfig, problem: Problem) -> dict[str, torch.Tensor]:
    """The "pre-trained" network: ERM on upright images disjoint from the domains (ImageNet stand-in)."""
    torch.manual_seed(derive_seed(0, "pretrain-init"))
    if problem.pretrain_set is None or config.pretrain_steps == 0:
        return {k: v.clone() for k, v in problem.build_net().state_dict().items()}
    task = DiwaTask(
        problem.build_net,
        [problem.pretrain_set],
        per_domain=config.pretrain_batch,
        max_steps=config.pretrain_steps,
        init_state=None,
        lr=config.pretrain_lr,
    )
    result = engine.fit(task, task.loop(derive_seed(0, "pretrain")), desc="pretrain")
    return {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()}


def _shared_init(
    engine: Engine,
    config: DiwaConfig,
    problem: Problem,
    pretrained: dict[str, torch.Tensor],
    trial: int,
    train: list[Dataset],
) -> dict[str, torch.Tensor]:
    """theta_0: the pre-trained featurizer with a fresh head, linear-probed unless random_head.

    As in the official code, one init is computed (on the first trial's in-splits) and shared by every trial's runs.
    """
    torch.manual_seed(derive_seed(trial, "head-init"))
    net = problem.build_net()
    state = dict(pretrained)
    state.update({k: v for k, v in net.state_dict().items() if k.startswith("classifier.")})
    if config.init == "random_head":
        return state
    task = DiwaTask(
        problem.build_net,
        train,
        per_domain=config.per_domain_batch,
        max_steps=max(config.lp_steps, 1),
        init_state=state,
        lr=config.lp_lr,
        train_featurizer=False,
    )
    return linear_probe(engine, task, config.lp_steps, seed=derive_seed(trial, "lp"), desc=f"lp t{trial}")


class _Evaluator:
    """Evaluates state dicts on the test domain and the training-domain hold-outs (cached by member subset)."""

    def __init__(self, problem: Problem, val: list[Dataset], test: Dataset, device: torch.device) -> None:
        self.net = problem.build_net().to(device)
        self.buffers = buffer_keys(self.net)
        self.val, self.test = val, test
        self.cache: dict[tuple[int, ...], dict[str, Any]] = {}

    def outputs(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        self.net.load_state_dict(state)
        test_logits, test_targets = predict(self.net, self.test)
        correct = []
        for dataset in self.val:
            logits, targets = predict(self.net, dataset)
            correct.append(logits.argmax(-1) == targets)
        per_domain = [float(c.float().mean()) for c in correct]
        return {
            "test_logits": test_logits,
            "test_targets": test_targets,
            "ood_acc": float((test_logits.argmax(-1) == test_targets).float().mean()),
            "val": sum(per_domain) / len(per_domain),
            "val_merged": float(torch.cat(correct).float().mean()),
        }

    def average(self, members: list[MemberRecord], subset: tuple[int, ...], force: bool = False) -> dict[str, Any]:
        key = tuple(sorted(subset))
        if key not in self.cache or force:
            state = average_state_dicts(
                [members[i].state for i in key],
                buffers=self.buffers,
                fingerprints=[members[i].fingerprint for i in key],
                force=force,
            )
            self.cache[key] = self.outputs(state)
        return self.cache[key]


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def _jobs(config: DiwaConfig) -> list[tuple[int, str, int]]:
    """Every training job of the sweep as (trial, kind, index), kind "member" or "control", in a fixed order."""
    return [
        (trial, kind, index)
        for trial in config.seeds
        for kind, count in (("member", config.members), ("control", config.control_members))
        for index in range(count)
    ]


def _train_job(
    engine: Engine,
    config: DiwaConfig,
    problem: Problem,
    init_state: dict[str, torch.Tensor],
    job: tuple[int, str, int],
    splits: tuple[list[Dataset], list[Dataset], Dataset],
    resume: bool,
) -> MemberRecord:
    """Train (or, with ``resume``, reload) one member or negative-control run."""
    trial, kind, index = job
    train, val, _ = splits
    space = MildSpace(
        lr=tuple(config.hparams.lr_default * f for f in config.hparams.lr_factors),
        weight_decay=config.hparams.weight_decay,
        dropout=config.hparams.dropout,
        default_lr=config.hparams.lr_default,
    )
    if kind == "member":
        hp = sample_hparams(index, seed=trial, space=space)
        state, ma_start = init_state, config.ma_start
    else:  # negative control: its own random init, default hyperparameters, no MA
        hp = sample_hparams(0, space=space)
        torch.manual_seed(derive_seed(trial, "control-init", index))
        state, ma_start = {k: v.clone() for k, v in problem.build_net().state_dict().items()}, None
    task = DiwaTask(
        problem.build_net,
        train,
        val,
        per_domain=config.per_domain_batch,
        max_steps=config.steps,
        init_state=state,
        lr=hp.lr,
        weight_decay=hp.weight_decay,
        dropout=hp.dropout,
        select_every=config.select_every,
        ma_start=ma_start,
        ckpt_every=config.ckpt_every,
    )
    name = f"{kind}_{index:02d}"
    run_dir = config.method_dir("diwa") / "runs" / f"trial_{trial}" / name
    return train_member(
        engine,
        task,
        name,
        derive_seed(trial, kind, index),
        run_dir,
        hparams=hp.to_dict(),
        resume=resume,
    )


def _init_state(engine: Engine, config: DiwaConfig, problem: Problem, reuse: bool) -> dict[str, torch.Tensor]:
    """The shared theta_0 (pre-training + LP); saved to ``<out>/diwa/runs/init.safetensors`` and reused when asked."""
    path = config.method_dir("diwa") / "runs" / INIT_FILE
    if reuse and path.is_file():
        return load_weights(path)
    pretrained = _pretrained_state(engine, config, problem)
    first = config.seeds[0]
    state = _shared_init(engine, config, problem, pretrained, first, problem.splits(first)[0])
    save_weights(state, path, metadata={"fingerprint": init_fingerprint(state)})
    return state


def prepare_init(config: DiwaConfig) -> Path:
    """Stage 1 of a distributed sweep: compute theta_0 once and save it (``<out>/diwa/runs/init.safetensors``)."""
    config.validate()
    apply_threads(config.threads)
    problem = _problem(config)
    _init_state(Engine(config.fabric, progress=config.progress), config, problem, reuse=False)
    return config.method_dir("diwa") / "runs" / INIT_FILE


def train_shard(config: DiwaConfig, shard: int, num_shards: int) -> list[str]:
    """Stage 2: train this shard's share of the runs (job k goes to shard k mod num_shards), from the saved init.

    Launch one process per GPU (or node) with its own ``shard``; completed runs are skipped, so a killed shard is
    restarted by launching it again. Stage 3 is ``frugal run diwa --resume`` (same config), which loads every run and
    averages. Returns the names of the runs this shard holds.
    """
    config.validate()
    if not 0 <= shard < num_shards:
        raise ConfigError(f"shard={shard} must lie in [0, num_shards={num_shards})")
    path = config.method_dir("diwa") / "runs" / INIT_FILE
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; run the init stage first (prepare_init / --stage init)")
    apply_threads(config.threads)
    problem = _problem(config)
    engine = Engine(config.fabric, progress=config.progress)
    init_state = load_weights(path)
    done = []
    for k, job in enumerate(_jobs(config)):
        if k % num_shards == shard:
            _train_job(engine, config, problem, init_state, job, problem.splits(job[0]), resume=True)
            done.append(f"trial_{job[0]}/{job[1]}_{job[2]:02d}")
    return done


def _problem(config: DiwaConfig) -> Problem:
    return _domainbed_problem(config) if config.benchmark == "domainbed" else _rotated_problem(config)


def _run_trial(
    engine: Engine,
    config: DiwaConfig,
    problem: Problem,
    init_state: dict[str, torch.Tensor],
    trial: int,
    dagger: MovingAverage,
) -> dict[str, Any]:
    splits = problem.splits(trial)
    _, val, test = splits
    members = [
        _train_job(engine, config, problem, init_state, (trial, "member", i), splits, config.resume)
        for i in range(config.members)
    ]
    for record in members:
        dagger.update(record.state, 0)
    evaluator = _Evaluator(problem, val, test, engine.device)
    single = [evaluator.average(members, (i,)) for i in range(len(members))]
    ma_outputs = [evaluator.outputs(m.ma_state) if m.ma_state is not None else None for m in members]

    rows: list[dict[str, Any]] = []
    curves: dict[str, list[float]] = {"diwa_uniform": [], "ens": [], "erm_best": []}
    for m in range(1, config.members + 1):
        idx = list(range(m))
        best = max(idx, key=lambda i: (members[i].val, -i))
        probs = torch.stack([single[i]["test_logits"].softmax(-1) for i in idx]).mean(0)
        curves["erm_best"].append(single[best]["ood_acc"])
        curves["ens"].append(float((probs.argmax(-1) == single[0]["test_targets"]).float().mean()))
        curves["diwa_uniform"].append(evaluator.average(members, tuple(idx))["ood_acc"])
    kept_counts: dict[int, int] = {}
    for m in config.ensemble_sizes:
        idx = list(range(m))
        best = max(idx, key=lambda i: (members[i].val, -i))
        uniform = evaluator.average(members, tuple(idx))
        metrics: dict[str, dict[str, float]] = {
            "erm_best": {"ood_acc": single[best]["ood_acc"], "val": single[best]["val"]},
            "member_mean": {
                "ood_acc": _mean([single[i]["ood_acc"] for i in idx]),
                "val": _mean([single[i]["val"] for i in idx]),
            },
            "ens": {"ood_acc": curves["ens"][m - 1], "forward_passes": float(m)},
            "diwa_uniform": {
                "ood_acc": uniform["ood_acc"],
                "val": uniform["val"],
                "wa_minus_ens": uniform["ood_acc"] - curves["ens"][m - 1],
                "forward_passes": 1.0,
            },
        }
        with_ma = [i for i in idx if ma_outputs[i] is not None]
        if with_ma:
            ma_best = max(with_ma, key=lambda i: (ma_outputs[i]["val"], -i))  # type: ignore[index]
            metrics["ma"] = {"ood_acc": ma_outputs[ma_best]["ood_acc"], "val": ma_outputs[ma_best]["val"]}  # type: ignore[index]
        scores = [members[i].val for i in idx]
        for arm, tie in (("diwa_restricted", config.tie), ("soup_greedy", "gt")):
            greedy = greedy_select(
                scores,
                lambda sub: evaluator.average(members, tuple(sub))["val_merged"],
                tie=tie,
                warn_single=arm == "diwa_restricted",
            )
            chosen = evaluator.average(members, tuple(greedy.selected))
            metrics[arm] = {"ood_acc": chosen["ood_acc"], "val": chosen["val"], "kept": float(len(greedy.selected))}
            if arm == "diwa_restricted":
                kept_counts[m] = len(greedy.selected)
        for arm in ARMS:
            if arm in metrics:
                rows.append({"name": f"{arm}_M{m}", "seed": trial, "metrics": metrics[arm]})

    pairs = []
    k = min(config.diversity_members, len(members))
    for i, j in itertools.combinations(range(k), 2):
        targets = single[i]["test_targets"]
        pred_i, pred_j = single[i]["test_logits"].argmax(-1), single[j]["test_logits"].argmax(-1)
        pairs.append(
            {
                "i": i,
                "j": j,
                "ratio_error": ratio_error(pred_i, pred_j, targets),
                "disagreement": disagreement(pred_i, pred_j),
                "gain": evaluator.average(members, (i, j))["ood_acc"]
                - (single[i]["ood_acc"] + single[j]["ood_acc"]) / 2,
            }
        )
    if len(pairs) >= 3:
        rows.append(
            {
                "name": "diversity_vs_gain",
                "seed": trial,
                "metrics": {
                    "pearson_r": _pearson([p["disagreement"] for p in pairs], [p["gain"] for p in pairs]),
                    "mean_gain": _mean([p["gain"] for p in pairs]),
                },
            }
        )

    control = None
    if config.control_members:
        records = [
            _train_job(engine, config, problem, init_state, (trial, "control", c), splits, config.resume)
            for c in range(config.control_members)
        ]
        accs = [evaluator.outputs(r.state)["ood_acc"] for r in records]
        averaged = evaluator.average(records, tuple(range(len(records))), force=True)
        evaluator.cache.clear()  # cache keys index into `members`; the control used other records
        control = {
            "ood_acc": averaged["ood_acc"],
            "worst_member_ood_acc": min(accs),
            "mean_member_ood_acc": _mean(accs),
        }
        rows.append({"name": "control_random_inits", "seed": trial, "metrics": control})
    return {
        "rows": rows,
        "curves": curves,
        "pairs": pairs,
        "control": control,
        "kept": kept_counts,
        "members": [
            {"name": r.name, "val": r.val, "best_step": r.best_step, "ood_acc": s["ood_acc"], **r.hparams}
            for r, s in zip(members, single)
        ],
        "init_fingerprint": init_fingerprint(init_state),
        "evaluator": evaluator,
    }


def _pearson(xs: list[float], ys: list[float]) -> float:
    pairs = [(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 3:
        return math.nan
    mx, my = _mean([p[0] for p in pairs]), _mean([p[1] for p in pairs])
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx, syy = sum((x - mx) ** 2 for x, _ in pairs), sum((y - my) ** 2 for _, y in pairs)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def compute_verdict(rows: list[dict[str, Any]], m: int, seeds: list[int]) -> str:
    """Apply the verdict rule (see ``VERDICT_RULE``) to the rows of the largest M."""

    def acc(name: str, seed: int) -> float:
        for row in rows:
            if row["name"] == name and row["seed"] == seed:
                return float(row["metrics"]["ood_acc"])
        return math.nan

    need = math.ceil(2 * len(seeds) / 3)
    wins = {
        arm: sum(acc(f"{arm}_M{m}", s) > acc(f"erm_best_M{m}", s) for s in seeds)
        for arm in ("diwa_uniform", "diwa_restricted")
    }
    below_all = all(
        max(acc(f"diwa_uniform_M{m}", s), acc(f"diwa_restricted_M{m}", s)) < acc(f"erm_best_M{m}", s) for s in seeds
    )
    controls = [r["metrics"] for r in rows if r["name"] == "control_random_inits"]
    collapsed = bool(controls) and all(c["ood_acc"] <= 0.5 * c["worst_member_ood_acc"] for c in controls)
    if max(wins.values()) >= need and collapsed:
        return "supported"
    if below_all:
        return "not supported"
    return "inconclusive"


VERDICT_RULE = (
    "supported if DiWA-uniform or DiWA-restricted (largest M) beats the best single run by training-domain "
    "validation (ERM-best) in OOD accuracy on at least 2/3 of the data splits AND the negative control (average of "
    "runs from different random inits) collapses to at most half of its worst member's OOD accuracy on every split; "
    "not supported if both DiWA arms are below ERM-best on every split; otherwise inconclusive"
)


def _figures(out_dir: Path, trials: list[dict[str, Any]], members: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(1, members + 1))
    series = {}
    for arm in ("diwa_uniform", "ens", "erm_best"):
        curves = [t["curves"][arm] for t in trials]
        means = [statistics.fmean(c[i] for c in curves) for i in range(members)]
        stds = [statistics.pstdev([c[i] for c in curves]) for i in range(members)]
        series[arm] = (means, stds)
    line_plot(
        out_dir / "ood_vs_m.png",
        xs,
        series,
        "M (members, in run order)",
        "OOD accuracy",
        "DiWA: OOD accuracy vs number of averaged runs",
    )
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for t, trial in enumerate(trials):
        ax.scatter(
            [p["disagreement"] for p in trial["pairs"]], [p["gain"] for p in trial["pairs"]], s=14, label=f"split {t}"
        )
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("prediction disagreement on the test domain (pair)")
    ax.set_ylabel("WA(pair) acc - mean member acc")
    ax.set_title("Diversity vs weight-averaging gain")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out_dir / "diversity_vs_gain.png", dpi=110)
    plt.close(fig)
    return ["ood_vs_m.png", "diversity_vs_gain.png"]


def run(config: DiwaConfig) -> dict[str, Any]:
    """Run the DiWA experiment and write ``<out>/diwa/results.json`` with figures; return the document."""
    config.validate()
    apply_threads(config.threads)
    start = time.perf_counter()
    out_dir = config.method_dir("diwa")
    out_dir.mkdir(parents=True, exist_ok=True)
    problem = _problem(config)
    engine = Engine(config.fabric, progress=config.progress)
    runs_dir = out_dir / "runs"
    if not config.resume and runs_dir.exists():
        shutil.rmtree(runs_dir)
    init_state = _init_state(engine, config, problem, reuse=config.resume)
    first = config.seeds[0]
    dagger = MovingAverage(0)
    trials = [_run_trial(engine, config, problem, init_state, trial, dagger) for trial in config.seeds]
    rows = [row for t in trials for row in t["rows"]]
    if len(config.seeds) > 1:  # DiWA-dagger: all runs of all data splits (they share theta_0)
        dagger_acc = trials[-1]["evaluator"].outputs(dagger.state_dict())["ood_acc"]
        rows.append({"name": f"diwa_dagger_M{dagger.count}", "seed": first, "metrics": {"ood_acc": dagger_acc}})
    m_max = max(config.ensemble_sizes)
    verdict = compute_verdict(rows, m_max, list(config.seeds))
    figures = _figures(out_dir, trials, config.members)
    details = {
        "test_domain": problem.test_domain,
        "init_fingerprint": init_fingerprint(init_state),
        "trials": [{k: t[k] for k in ("curves", "pairs", "control", "kept", "members")} for t in trials],
    }
    (out_dir / "details.json").write_text(json.dumps(details, indent=1, default=float))
    kept = [t["kept"].get(m_max, 0) for t in trials]
    notes = (
        f"benchmark {problem.name}, test domain {problem.test_domain} used in full; init={config.init} "
        f"(lp_steps={config.lp_steps}), one shared init for all data splits; M={config.members} members x "
        f"{config.steps} steps; greedy kept {kept} of "
        f"{m_max}; per-member details, curves and diversity pairs in details.json"
    )
    doc = make_results(
        method="diwa",
        paper=get_method("diwa").paper,
        preset=config.preset,
        dataset=problem.name,
        claim=CLAIM,
        rows=rows,
        verdict=verdict,
        verdict_rule=VERDICT_RULE,
        wall_s=time.perf_counter() - start,
        figures=figures,
        notes=notes,
        primary_metric="ood_acc",
    )
    write_results(doc, out_dir)
    return doc


def benchmark(out_dir: Path) -> dict[str, Any]:
    """Inference latency of one weight-averaged model vs the functional ensemble of its M members (CPU, batch 256)."""
    from frugalvision.methods.diwa.averaging import FunctionalEnsemble, average_models

    results: dict[str, Any] = {}
    x = torch.rand(256, 1, 14, 14)
    for m in (5, 10):
        members = [gn_cnn(1, 10, 32).eval() for _ in range(m)]
        merged = average_models(members).eval()
        ensemble = FunctionalEnsemble(members).eval()
        timings = {}
        for name, model in (("wa", merged), ("ens", ensemble)):
            with torch.no_grad():
                model(x)
                samples = []
                for _ in range(20):
                    t0 = time.perf_counter()
                    model(x)
                    samples.append(time.perf_counter() - t0)
            timings[name] = statistics.median(samples) * 1e3
        results[f"M{m}"] = {"wa_ms": timings["wa"], "ens_ms": timings["ens"], "ratio": timings["ens"] / timings["wa"]}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "diwa_benchmark.json").write_text(json.dumps(results, indent=2))
    return results
