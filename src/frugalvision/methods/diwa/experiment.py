"""The DiWA experiment on the harness: M diverse fine-tunings from a shared init per data split, weight-averaged.

Units: the shared initialisation (the pretrained featurizer, or pre-training here, then linear probing; once), then
for every seed (= data split) one unit per member and one per run from scratch, each saving its best weights under
its unit folder. :func:`finish` loads them and computes every averaged row (ERM-best, member mean, MA, ENS, DiWA
uniform / restricted, soups, DiWA-dagger, the negative control, diversity vs gain), so ``--resume`` retrains nothing
that finished. The texture benchmark's frozen EfficientNet-Lite0 features are cached under ``<out>/diwa/cache``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from frugalvision.errors import ConfigError
from frugalvision.harness import (
    Context,
    Experiment,
    FigureInput,
    Precondition,
    Study,
    Unit,
    UnitRecord,
    UnitResult,
    Verdict,
    benchmark_result,
    claim_verdict,
    compare,
    interleaved_timings,
    metric_values,
    ratio_entry,
    threshold,
)
from frugalvision.harness.stats import ALPHA
from frugalvision.methods.diwa.analysis import Evaluator, curves, pairs, seed_rows
from frugalvision.methods.diwa.averaging import MovingAverage, init_fingerprint
from frugalvision.methods.diwa.config import DiwaConfig, extended, paper, rotated, smoke, standard
from frugalvision.methods.diwa.hparams import MildSpace, sample_hparams
from frugalvision.methods.diwa.members import (
    BEST_FILE,
    MA_FILE,
    Fit,
    MemberRecord,
    cpu_state,
    linear_probe,
    train_member,
)
from frugalvision.methods.diwa.model import gn_cnn
from frugalvision.methods.diwa.problem import Problem, Splits
from frugalvision.methods.diwa.problem import build_problem as _build_problem
from frugalvision.methods.diwa.task import DiwaTask
from frugalvision.seeding import derive_seed

METHOD = "diwa"
CLAIM = (
    "Averaging the weights of M independent fine-tunings from a shared (linear-probed) initialisation with mild, "
    "diverse hyperparameters gives better out-of-distribution accuracy than the best single run and than a moving "
    "average along one run, at the inference cost of one model; averaging runs from different inits collapses."
)
INIT_UNIT = "shared_init"
INIT_FILE = "init.safetensors"
DIWA_ARMS = ("diwa_uniform", "diwa_restricted")


def _space(config: DiwaConfig) -> MildSpace:
    hp = config.hparams
    lrs = tuple(hp.lr_default * f for f in hp.lr_factors)
    return MildSpace(lr=lrs, weight_decay=hp.weight_decay, dropout=hp.dropout, default_lr=hp.lr_default)


def build_problem(config: DiwaConfig, cache_dir: Path | None = None, save: Any = None) -> Problem:
    """The config's benchmark; the frozen trunk's features are read from / written to ``cache_dir`` when given.

    ``save(tensors, path)`` writes a cache file (the experiment passes ``ctx.save_weights``: rank 0, then a barrier).
    """
    if cache_dir is None:
        return _build_problem(config)

    def cached(name: str, build: Any) -> dict[str, torch.Tensor]:
        from frugalvision.engine import load_weights, save_weights

        path = cache_dir / name
        if not path.is_file():
            (save or save_weights)(build(), path)
        return load_weights(path)

    return _build_problem(config, cached)


def _problem(ctx: Context[DiwaConfig]) -> Problem:
    cache_dir = ctx.cache_path("x").parent
    return ctx.memo("problem", lambda: build_problem(ctx.config, cache_dir, ctx.save_weights))


def _init_path(out_dir: Path, config: DiwaConfig) -> Path:
    return out_dir / "runs" / Unit(INIT_UNIT, config.seeds[0]).id / INIT_FILE


# ------------------------------------------------------------------------------------------------ units
def units(config: DiwaConfig) -> list[Unit]:
    """The shared init first (on the first seed's split), then per seed every member and every run from scratch."""
    plan = [Unit(INIT_UNIT, config.seeds[0])]
    for seed in config.seeds:
        plan += [Unit(f"member{i:02d}", seed, {"kind": "member", "index": i}) for i in range(config.members)]
        plan += [Unit(f"scratch{i:02d}", seed, {"kind": "scratch", "index": i}) for i in range(config.control_members)]
    return plan


def _fitter(ctx: Context[DiwaConfig], name: str) -> Fit:
    """``ctx.fit`` as the members module expects it: the loop's own seed, the config's checkpoint interval."""
    every = ctx.config.ckpt_every
    return lambda task, loop: ctx.fit(task, replace(loop, ckpt_every=every), name=name, seed=loop.seed)


def _shared_init(ctx: Context[DiwaConfig], problem: Problem, seed: int) -> dict[str, torch.Tensor]:
    """theta_0: the pretrained featurizer and a fresh head, linear-probed unless ``init="random_head"``.

    The featurizer is the benchmark's shipped pretrained one, or pre-trained here (ERM on upright images).
    """
    config = ctx.config
    if problem.pretrained is not None:
        torch.manual_seed(derive_seed(0, "pretrain-init"))
        pretrained = {**cpu_state(problem.build_net()), **problem.pretrained()}
    elif problem.pretrain_set is None or config.pretrain_steps == 0:
        torch.manual_seed(derive_seed(0, "pretrain-init"))
        pretrained = cpu_state(problem.build_net())
    else:
        task = DiwaTask(
            problem.build_net,
            [problem.pretrain_set],
            per_domain=config.pretrain_batch,
            max_steps=config.pretrain_steps,
            lr=config.pretrain_lr,
        )
        pretrained = cpu_state(_fitter(ctx, "pretrain")(task, task.loop(derive_seed(0, "pretrain"))).model)
    torch.manual_seed(derive_seed(seed, "head-init"))
    state = {**pretrained, **{k: v for k, v in cpu_state(problem.build_net()).items() if k.startswith("classifier.")}}
    if config.init == "random_head":
        return state
    train = ctx.memo(("splits", seed), lambda: problem.splits(seed))[0]
    task = DiwaTask(
        problem.build_net,
        train,
        per_domain=config.per_domain_batch,
        max_steps=max(config.lp_steps, 1),
        init_state=state,
        lr=config.lp_lr,
        train_featurizer=False,
    )
    return linear_probe(task, config.lp_steps, seed=derive_seed(seed, "lp"), fit=_fitter(ctx, "lp"))


def _train_run(ctx: Context[DiwaConfig], problem: Problem, unit: Unit) -> MemberRecord:
    """One member (shared init, mild hparams of its index, MA) or one run from scratch (own init, defaults)."""
    from frugalvision.engine import load_weights

    config, kind, index = ctx.config, unit.params["kind"], unit.params["index"]
    if kind == "member":
        hp = sample_hparams(index, seed=unit.seed, space=_space(config))
        init, ma_start = load_weights(_init_path(ctx.out_dir, config)), config.ma_start
    else:
        hp = sample_hparams(0, space=_space(config))
        torch.manual_seed(derive_seed(unit.seed, "control-init", index))
        init, ma_start = cpu_state(problem.build_net()), None
    train, val, _ = ctx.memo(("splits", unit.seed), lambda: problem.splits(unit.seed))
    task = DiwaTask(
        problem.build_net,
        train,
        val,
        per_domain=config.per_domain_batch,
        max_steps=config.steps,
        init_state=init,
        lr=hp.lr,
        weight_decay=hp.weight_decay,
        dropout=hp.dropout,
        select_every=config.select_every,
        ma_start=ma_start,
    )
    return train_member(
        task, derive_seed(unit.seed, kind, index), fit=_fitter(ctx, ""), name=unit.name, hparams=hp.to_dict()
    )


def run_unit(ctx: Context[DiwaConfig], unit: Unit) -> UnitResult:
    """Train the shared init, a member or a run from scratch; save its weights in the unit folder (rows: none)."""
    problem = _problem(ctx)
    if unit.name == INIT_UNIT:
        state = _shared_init(ctx, problem, unit.seed)
        ctx.save_weights(state, ctx.unit_dir / INIT_FILE)
        extras = {"fingerprint": init_fingerprint(state), "test_domain": problem.test_domain}
        return UnitResult([], extras, dataset=problem.name)
    record = _train_run(ctx, problem, unit)
    ctx.save_weights(record.state, ctx.unit_dir / BEST_FILE)
    if record.ma_state is not None:
        ctx.save_weights(record.ma_state, ctx.unit_dir / MA_FILE)
    extras = {
        "val": record.val,
        "ma_val": record.ma_val if math.isfinite(record.ma_val) else None,
        "best_step": record.best_step,
        "fingerprint": record.fingerprint,
        "hparams": record.hparams,
        "has_ma": record.ma_state is not None,
    }
    return UnitResult([], extras, dataset=problem.name)


# ------------------------------------------------------------------------------------------------ after the units
#: curves and pairs computed by :func:`finish`, kept in this process for :func:`figures` ({(out dir, seed): data})
_FIGURE_DATA: dict[tuple[str, int], dict[str, Any]] = {}


def _load_run(folder: Path, record: UnitRecord) -> MemberRecord:
    from frugalvision.engine import load_weights

    extras = record.extras
    return MemberRecord(
        name=record.unit.name,
        state=load_weights(folder / BEST_FILE),
        val=float(extras["val"]),
        fingerprint=str(extras["fingerprint"]),
        hparams=dict(extras["hparams"]),
        best_step=int(extras["best_step"]),
        ma_state=load_weights(folder / MA_FILE) if extras.get("has_ma") else None,
    )


def _load_seed(out_dir: Path, records: list[UnitRecord], seed: int, init: str) -> tuple[list[MemberRecord], ...]:
    """(members in index order, runs from scratch) of one seed; members must come from the current shared init."""
    runs: dict[str, list[MemberRecord]] = {"member": [], "scratch": []}
    for record in sorted(records, key=lambda r: r.unit.name):
        if record.unit.seed == seed and record.unit.name != INIT_UNIT:
            run = _load_run(out_dir / "runs" / record.unit.id, record)
            if record.unit.params["kind"] == "member" and run.fingerprint != init:
                raise ConfigError(f"{record.unit.id} was trained from another shared init; run without --resume")
            runs[record.unit.params["kind"]].append(run)
    return runs["member"], runs["scratch"]


def _evaluator(problem: Problem, splits: Splits, device: torch.device) -> Evaluator:
    _, val, test = splits
    return Evaluator(problem.build_net().to(device), val, test)


def finish(ctx: Context[DiwaConfig], records: list[UnitRecord]) -> list[dict[str, Any]]:
    """Every averaged row, per seed from that seed's saved members, plus DiWA-dagger over all seeds' members."""
    from frugalvision.engine import load_weights

    config = ctx.config
    problem = _problem(ctx)
    init_state = load_weights(_init_path(ctx.out_dir, config))
    fingerprint = init_fingerprint(init_state)
    rows: list[dict[str, Any]] = []
    dagger: MovingAverage | None = None
    for seed in config.seeds:
        members, scratch = _load_seed(ctx.out_dir, records, seed, fingerprint)
        ev = _evaluator(problem, ctx.memo(("splits", seed), lambda s=seed: problem.splits(s)), ctx.engine.device)
        if seed == config.seeds[0]:
            shared = ev.outputs(init_state)
            rows.append(
                {"name": INIT_UNIT, "seed": seed, "metrics": {"ood_acc": shared["ood_acc"], "val": shared["val"]}}
            )
        rows += seed_rows(ev, members, scratch, seed, config.ensemble_sizes, config.diversity_members, config.tie)
        if ctx.is_main:  # only rank 0 draws figures
            figure_data = {"curves": curves(ev, members), "pairs": pairs(ev, members, config.diversity_members)}
            _FIGURE_DATA[(str(ctx.out_dir), seed)] = figure_data
        dagger = dagger or MovingAverage(0, buffers=ev.buffers)
        for member in members:
            dagger.update(member.state, 0)
    if len(config.seeds) > 1 and dagger is not None:
        acc = ev.outputs(dagger.state_dict())["ood_acc"]
        rows.append({"name": f"diwa_dagger_M{dagger.count}", "seed": config.seeds[0], "metrics": {"ood_acc": acc}})
    return rows


# ------------------------------------------------------------------------------------------------ verdict
def _strength(comparison: Any) -> tuple[bool, float]:
    better = comparison.outcome == "better"
    return better, comparison.lower if better else comparison.upper


def restricted_is_distinct(rows: list[dict[str, Any]], m: int) -> bool:
    """Whether greedy selection kept more than one member on every split (else restricted is the best single run).

    Decided from the training-domain validation (the ``kept`` counts), never from the test domain, so the rule may
    use it to choose its candidates.
    """
    kept = metric_values(rows, "kept", f"diwa_restricted_M{m}")
    return bool(kept) and min(kept.values()) > 1


def locality(config: DiwaConfig, rows: list[dict[str, Any]], m: int) -> Precondition:
    """The runs stay in one basin: in domain, the weight average is within ``wa_ens_gap`` of the ensemble."""
    name = f"the weight average is within {100 * config.wa_ens_gap:g} point of the ensemble in domain (locality)"
    gaps = metric_values(rows, "val_wa_minus_ens", f"diwa_uniform_M{m}")
    if not gaps:
        return Precondition(name, False, "no in-domain WA - ENS gap recorded")
    gap = statistics.fmean(gaps.values())
    return Precondition(
        name, gap >= -config.wa_ens_gap, f"mean val(WA) - val(ENS) = {gap:+.4f} over {len(gaps)} splits"
    )


def verdict(config: DiwaConfig, rows: list[dict[str, Any]]) -> Verdict:
    """DiWA beats ERM-best at the largest M and the average of different inits collapses, if the regime holds.

    Preconditions: the shared init beats training from scratch (when runs from scratch exist) and the weight
    average is within ``wa_ens_gap`` of the ensemble in domain. The DiWA candidates are uniform, and restricted when
    greedy selection kept more than one member on every split (else restricted is ERM-best itself); the better one
    is voted, each tested at alpha / k. Without runs from scratch (``control_members=0``) the collapse control is
    not voted and the rule says so.
    """
    m = max(config.ensemble_sizes)
    arms = DIWA_ARMS if restricted_is_distinct(rows, m) else DIWA_ARMS[:1]
    alpha = ALPHA / len(arms)
    candidates = [compare(rows, "ood_acc", f"{arm}_M{m}", f"erm_best_M{m}", alpha=alpha) for arm in arms]
    comparisons = [max(candidates, key=_strength)]
    preconditions = [locality(config, rows, m)]
    with_control = config.control_members >= 2
    if with_control:
        comparisons.append(threshold(rows, "collapse_gap", "control_random_inits", 0.0, alpha=ALPHA / 2, label="0"))
        start = compare(rows, "ood_acc", "finetune_default", "scratch_default")
        preconditions.insert(
            0,
            Precondition(
                "the shared init beats training from scratch (finetune_default > scratch_default on ood_acc, same "
                "hyperparameters and steps)",
                start.outcome == "better",
                start.describe(),
            ),
        )
    claim = (
        f"DiWA ({' or '.join(arms)}, the better at alpha/{len(arms)}; restricted only when greedy kept > 1 member "
        "on every split) beats the best single run"
        + (
            ", and the average of runs from different inits collapses (collapse_gap = half the worst such run's "
            "accuracy - their average's > 0)"
            if with_control
            else " (no runs from scratch: the collapse control and the scratch check were not run)"
        )
    )
    return claim_verdict(comparisons, preconditions, claim=claim)


# ------------------------------------------------------------------------------------------------ figures, notes
def _figure_data(fig: FigureInput[DiwaConfig]) -> list[dict[str, Any]]:
    """Curves and pairs per seed: those of :func:`finish` when this process ran it, else recomputed from the weights."""
    keys = [(str(fig.out_dir), seed) for seed in fig.config.seeds]
    if all(key in _FIGURE_DATA for key in keys):
        return [_FIGURE_DATA.pop(key) for key in keys]
    problem = build_problem(fig.config, fig.out_dir / "cache")
    fingerprint = next(r.extras["fingerprint"] for r in fig.records if r.unit.name == INIT_UNIT)
    out = []
    for seed in fig.config.seeds:
        members, _ = _load_seed(fig.out_dir, fig.records, seed, fingerprint)
        ev = _evaluator(problem, problem.splits(seed), torch.device("cpu"))
        out.append({"curves": curves(ev, members), "pairs": pairs(ev, members, fig.config.diversity_members)})
    return out


def figures(fig: FigureInput[DiwaConfig]) -> list[str]:
    """OOD accuracy vs M (DiWA uniform, ENS, ERM-best; band: std over seeds) and diversity vs pair-WA gain."""
    import matplotlib.pyplot as plt

    from frugalvision.report import line_plot

    data, count = _figure_data(fig), fig.config.members
    series = {
        arm: (
            [statistics.fmean(d["curves"][arm][i] for d in data) for i in range(count)],
            [statistics.pstdev([d["curves"][arm][i] for d in data]) for i in range(count)],
        )
        for arm in ("diwa_uniform", "ens", "erm_best")
    }
    line_plot(
        fig.out_dir / "ood_vs_m.png",
        list(range(1, count + 1)),
        series,
        "M (members, in run order)",
        "OOD accuracy",
        "DiWA: OOD accuracy vs number of averaged runs",
    )
    figure, ax = plt.subplots(figsize=(5.0, 3.4))
    for seed, seed_data in zip(fig.config.seeds, data):
        xs, ys = [p["disagreement"] for p in seed_data["pairs"]], [p["gain"] for p in seed_data["pairs"]]
        ax.scatter(xs, ys, s=14, label=f"split {seed}")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set(
        xlabel="prediction disagreement on the test domain (pair)",
        ylabel="WA(pair) acc - mean member acc",
        title="Diversity vs weight-averaging gain",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(fig.out_dir / "diversity_vs_gain.png", dpi=110)
    plt.close(figure)
    return ["ood_vs_m.png", "diversity_vs_gain.png"]


def notes(config: DiwaConfig, records: list[UnitRecord]) -> str:
    """The protocol in one sentence."""
    init = next(r for r in records if r.unit.name == INIT_UNIT)
    return (
        f"test domain {init.extras['test_domain']} used in full; init={config.init} (pretrain_steps="
        f"{config.pretrain_steps}, lp_steps={config.lp_steps}), one shared init (LP on split {init.unit.seed}) for all "
        f"data splits; per split M={config.members} members x {config.steps} steps and {config.control_members} runs "
        "from scratch (default hyperparameters); 'kept' = members kept by greedy selection"
    )


# ------------------------------------------------------------------------------------------------ benchmark
def benchmark(out_dir: Path) -> dict[str, Any]:
    """Inference latency of one weight-averaged model vs the functional ensemble of its M members (CPU, batch 256).

    Interleaved rounds (:mod:`frugalvision.harness.timing`); each row is the median of per-round ENS / WA ratios.
    """
    from frugalvision.methods.diwa.averaging import FunctionalEnsemble, average_models

    x = torch.rand(256, 1, 14, 14)
    rows = []
    for m in (5, 10):
        torch.manual_seed(m)
        members = [gn_cnn(1, 10, 32).eval() for _ in range(m)]
        merged, ensemble = average_models(members).eval(), FunctionalEnsemble(members).eval()
        with torch.no_grad():
            arms = {"wa": lambda net=merged: net(x), "ens": lambda net=ensemble: net(x)}
            timings = interleaved_timings(arms, rounds=20, warmup=3)
        rows.append(
            ratio_entry(
                timings,
                "ens",
                "wa",
                name=f"inference, M = {m} members (batch 256, 1x14x14)",
                arm_label=f"functional ensemble of the {m} members",
                peer_label="their weight average (one model)",
                members=m,
            )
        )
    return benchmark_result(rows, device="cpu", batch=256, image="1x14x14")


MAIN = Study(
    claim=CLAIM,
    primary_metric="ood_acc",
    run_unit=run_unit,
    verdict=verdict,
    units=units,
    finish=finish,
    figures=figures,
    notes=notes,
    null_levels=lambda config: {"collapse_gap": 0.0},
)

EXPERIMENT = Experiment(
    name=METHOD,
    config_class=DiwaConfig,
    presets={"smoke": smoke, "standard": standard, "extended": extended, "paper": paper, "rotated": rotated},
    main=MAIN,
    benchmark=benchmark,
)
