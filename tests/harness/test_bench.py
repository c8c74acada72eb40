"""The interleaved timer's ratios, the benchmark contract, and the runner's results.json per benchmark."""

import json

import pytest
import torch

from frugalvision.harness import Timing, benchmark_result, interleaved_timings, ratio_entry
from frugalvision.harness.bench import contract_gaps, run_benchmark
from frugalvision.harness.builtin_bench import engine_overhead


def test_ratio_entry_is_the_median_of_per_round_ratios_with_its_quartiles():
    timings = {"ours": Timing("ours", (1.0, 2.0, 9.0, 4.0, 5.0)), "peer": Timing("peer", (2.0, 2.0, 3.0, 8.0, 5.0))}
    entry = ratio_entry(timings, "ours", "peer", peer_label="timm", goal=1.0, batch=8)
    # per-round ratios 0.5, 1, 3, 0.5, 1 -> median 1, quartiles 0.5 and 1 (not the ratio of the medians, 4/3)
    assert entry["ratio"] == 1.0 and entry["ratio_q25"] == 0.5 and entry["ratio_q75"] == 1.0
    assert entry["arm_ms"] == 4.0 and entry["peer_ms"] == 3.0 and entry["rounds"] == 5
    assert entry["peer"] == "timm" and entry["arm"] == "ours" and entry["meets_goal"] is True and entry["batch"] == 8
    assert benchmark_result([entry], extra=1) == {"ratios": [entry], "extra": 1}


def test_every_round_runs_every_arm_in_a_shuffled_order():
    calls = []
    interleaved_timings({name: (lambda name=name: calls.append(name)) for name in "abc"}, rounds=12, warmup=0)
    rounds = [tuple(calls[i : i + 3]) for i in range(0, len(calls), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds) and len(set(rounds)) > 1


def _row(**values):
    row = {"name": "step", "arm": "ours", "peer": "timm", "ratio": 1.0, "ratio_q25": 0.9, "ratio_q75": 1.1}
    return {**row, "arm_ms": 1.0, "peer_ms": 1.0, "rounds": 10, "threads": 2, **values}


@pytest.mark.parametrize(
    "result, needle",
    [
        ({"ratios": [_row()]}, None),
        ({"ratios": [_row(peer=None)]}, "lacks peer"),
        ({"ratios": [_row(rounds=3)]}, "rests on 3 rounds"),
        ({"M5": {"ratio": 0.9, "ratio_q25": 0.8, "ratio_q75": 1.0}}, "outside a 'ratios' list"),
        ({"dense": {"latency_ratio": 0.6}}, "no spread (q25/q75 over rounds) found for dense.latency_ratio"),
        ({"M5": {"macs_ratio": 0.5, "a_over_b": 2.0, "a_over_b_iqr": [1, 3]}}, "outside a 'ratios' list"),
        ({"ms": 3.0}, "returns no ratio at all"),
        ({"macs_ratio": 0.5, "mib_over_dense": 0.9}, "returns no ratio at all"),
    ],
)
def test_contract_gaps_say_what_a_benchmark_lacks(result, needle):
    gaps = contract_gaps(result)
    assert (not gaps) if needle is None else any(needle in gap for gap in gaps), gaps


def test_run_benchmark_writes_one_results_file_and_restores_the_threads(tmp_path):
    threads = torch.get_num_threads()

    def greedy(folder):
        torch.set_num_threads(1)
        return {"ratios": [_row()], "note": "x"}

    document = run_benchmark("toy", "method", greedy, tmp_path)
    assert torch.get_num_threads() == threads
    written = json.loads((tmp_path / "bench" / "toy" / "results.json").read_text())
    assert written == document and document["contract"] == {"met": True, "gaps": []}
    assert document["ratios"] == [_row()] and document["details"] == {"note": "x"}
    assert {"threads", "omp_wait_policy", "cpu", "cpu_count"} <= set(document["env"])


def test_a_failing_benchmark_is_recorded_not_raised(tmp_path):
    def broken(folder):
        raise ValueError("no peer installed")

    document = run_benchmark("broken", "method", broken, tmp_path)
    assert document["error"] == "ValueError: no peer installed" and not document["contract"]["met"]


def test_engine_overhead_reports_one_complete_ratio(tmp_path):
    result = engine_overhead(tmp_path, steps=8, rounds=5, warmup=1)
    assert contract_gaps(result) == [] and result["ratios"][0]["peer"] == "bare PyTorch loop"
    assert result["engine_ms_per_step"] > 0 and result["bare_ms_per_step"] > 0


@pytest.mark.slow
def test_startup_reports_three_commands_against_import_torch_and_a_smoke_run(tmp_path):
    from frugalvision.harness.builtin_bench import startup

    result = startup(tmp_path, rounds=2)
    commands = ["frugal list", "frugal --help", "frugal run baseline --help (cached)"]
    assert [row["arm"] for row in result["ratios"]] == commands
    assert all(row["peer"] == "import torch" and row["ratio"] > 0 for row in result["ratios"])
    smoke = result["smoke_run"]
    assert smoke["peak_rss_mib"] > 100 and 0 < smoke["compute_s"] < smoke["wall_s"]
    assert not (tmp_path / "startup-work").exists()
