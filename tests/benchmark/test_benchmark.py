"""mddpm benchmark: experiment files, Table 1 statistics and p-values, resume, the CLI, and one real run."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from scipy.stats import wilcoxon

import mddpm.benchmark.execute as execute
from benchmark_fakes import experiment_dict, metrics, write_experiment
from mddpm.benchmark.experiment import load_experiment, parse_data_args
from mddpm.benchmark.plan import expected_run_config, plan
from mddpm.benchmark.runner import run_benchmark
from mddpm.benchmark.statistics import across_runs, paired_wilcoxon
from mddpm.benchmark.table import Evaluation, build_table, stage_seconds
from mddpm.cli.main import main
from mddpm.config import resolve_config
from mddpm.errors import MddpmError
from mddpm.io import read_json, write_json
from mddpm.report.table_files import table_csv, table_markdown

TABLE1_ROWS = ["vae", "svae", "dae", "fanogan", "ddpm", "pddpm", "mddpm-ipm", "mddpm-fpm", "mddpm-fpmcm"]


# ---- statistics ---------------------------------------------------------------------------------

def test_across_runs_mean_and_std():
    stat = across_runs([0.2, 0.4, None, 0.9, float("nan")])
    assert stat["mean"] == pytest.approx(0.5)
    assert stat["std"] == pytest.approx(np.std([0.2, 0.4, 0.9]))
    assert stat["std_sample"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert stat["n_runs"] == 3
    assert across_runs([None])["mean"] is None and across_runs([0.3])["std_sample"] is None


def test_table_statistics_and_p_values_equal_scipy():
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(12)]
    evaluations, pooled = [], {"a": {"dice": [], "auprc": []}, "ref": {"dice": [], "auprc": []}}
    per_run_means = {"a": [], "ref": []}
    for run in ("seed1", "seed2", "seed3"):
        for method, offset in (("a", 0.05), ("ref", 0.0)):
            dice = {c: float(np.clip(rng.normal(0.5 + offset, 0.1), 0, 1)) for c in ids}
            auprc = {c: float(np.clip(rng.normal(0.4 + offset, 0.1), 0, 1)) for c in ids}
            order = ids[::-1] if method == "a" else ids  # pairing is by case id, not position
            m = metrics({c: dice[c] for c in order}, {c: auprc[c] for c in order})
            evaluations.append(Evaluation("d", "t", method, run, m))
            pooled[method]["dice"] += [dice[c] for c in ids]
            pooled[method]["auprc"] += [auprc[c] for c in ids]
            per_run_means[method].append(np.mean(list(dice.values())))
    table = build_table(evaluations, ["a", "ref"], reference="ref")
    cell = table["rows"][0]["cells"]["d/t"]
    assert cell["dice"]["mean"] == pytest.approx(np.mean(per_run_means["a"]))
    assert cell["dice"]["std"] == pytest.approx(np.std(per_run_means["a"]))
    assert cell["dice"]["n_runs"] == 3
    assert cell["p_dice"]["p"] == pytest.approx(wilcoxon(pooled["a"]["dice"], pooled["ref"]["dice"]).pvalue, rel=1e-12)
    p_auprc = wilcoxon(pooled["a"]["auprc"], pooled["ref"]["auprc"]).pvalue
    assert cell["p_auprc"]["p"] == pytest.approx(p_auprc, rel=1e-12)
    assert cell["p_dice"]["n_pairs"] == 36
    difference = np.mean(pooled["a"]["dice"]) - np.mean(pooled["ref"]["dice"])
    assert cell["p_dice"]["mean_difference"] == pytest.approx(difference)
    ref_row = table["rows"][1]
    assert ref_row["reference"] and ref_row["cells"]["d/t"]["p_dice"] is None


def test_wilcoxon_pairs_only_matching_runs_and_cases():
    a = {"r1": metrics({"x": 0.5, "y": 0.6, "z": 0.1}, {"x": 0.1, "y": 0.2, "z": 0.3}),
         "r2": metrics({"x": 0.9}, {"x": 0.9})}
    ref = {"r1": metrics({"y": 0.4, "x": 0.2, "w": 0.0}, {"y": 0.1, "x": 0.3, "w": 0.0})}
    test = paired_wilcoxon(a, ref, "dice", "bisection")
    assert test["n_pairs"] == 2  # x and y of run r1
    assert test["p"] is None and "fewer than 6 pairs" in test["note"]  # scipy would say 0.5 from these 2
    assert test["mean_difference"] == pytest.approx(0.25)
    assert paired_wilcoxon(a, {"r9": ref["r1"]}, "dice", "bisection")["p"] is None


def test_no_p_value_below_six_pairs():
    """The smallest two-sided p of n pairs is 2 / 2**n: from 5 pairs even a clear difference gives 0.0625."""
    method = {"r1": metrics({f"c{i}": 0.9 for i in range(6)}, {f"c{i}": 0.5 for i in range(6)})}
    reference = {"r1": metrics({f"c{i}": 0.1 * i for i in range(6)}, {f"c{i}": 0.5 for i in range(6)})}
    six = paired_wilcoxon(method, reference, "dice", "bisection")
    assert six["n_pairs"] == 6 and six["p"] == pytest.approx(2 / 2**6) and "note" not in six
    five = paired_wilcoxon({"r1": metrics({f"c{i}": 0.9 for i in range(5)}, {f"c{i}": 0.5 for i in range(5)})},
                           reference, "dice", "bisection")
    assert five["n_pairs"] == 5 and five["p"] is None and five["note"].startswith("no p-value from fewer than 6")


def test_table_files_markdown_and_csv():
    evs = [Evaluation("d", "BraTS21", m, r, metrics({"c1": v, "c2": v + 0.1, "c3": v / 2}, {"c1": v, "c2": v, "c3": v}))
           for m, base in (("vae", 0.2), ("mddpm-fpmcm", 0.5), ("intensity", 0.3))
           for r, v in (("fold0", base), ("fold1", base + 0.1))]
    table = build_table(evs, ["vae", "mddpm-fpmcm", "intensity"], reference="mddpm-fpmcm",
                        labels={"mddpm-fpmcm": "mDDPM (FPM-CM)"}, extra_rows=["intensity"],
                        published={"source": "paper", "values": {"vae": {"BraTS21": {"dice": [30.57, 1.67]}}}})
    md = table_markdown(table)
    dice = table["rows"][0]["cells"]["d/BraTS21"]["dice"]
    assert f"| vae | {100 * dice['mean']:.2f} ± {100 * dice['std']:.2f} |" in md
    assert "mDDPM (FPM-CM) (reference)" in md and "intensity (no" not in md and "| intensity ‡ |" in md
    assert "30.57 ± 1.67" in md and "p-values against mDDPM (FPM-CM)" in md
    rows = list(csv.DictReader(io.StringIO(table_csv(table))))
    vae_dice = [r for r in rows if r["method"] == "vae" and r["metric"] == "dice"][0]
    assert float(vae_dice["mean"]) == pytest.approx(dice["mean"]) and vae_dice["n_runs"] == "2"
    assert float(vae_dice["p_value"]) == pytest.approx(table["rows"][0]["cells"]["d/BraTS21"]["p_dice"]["p"])
    assert {r["metric"] for r in rows} >= {"dice", "auprc", "auroc", "oracle_dice", "dice[bisection]"}


# ---- experiments-----------------------------------------------------------------------------------

def test_shipped_experiments_have_every_table1_row():
    for name, kind, preset in (("paper", "folds", "paper"), ("synthetic", "seeds", "demo")):
        experiment = load_experiment(name)
        assert experiment.methods[:9] == TABLE1_ROWS and {"mddpm-released", "intensity"} <= set(experiment.extra_rows)
        assert set(experiment.extra_rows) - {"mddpm-released", "intensity"} == set(experiment.variants)
        assert experiment.run_kind == kind and experiment.preset == preset and experiment.reference == "mddpm-fpmcm"
        assert len(experiment.datasets) == 1 and len(experiment.datasets[0].test_sets) == 2
    assert [r.fold for r in load_experiment("paper").runs] == [0, 1, 2, 3, 4]
    assert [t.test for t in load_experiment("paper").datasets[0].test_sets] == ["brats21_test", "mslub_test"]
    assert [t.test for t in load_experiment("synthetic").datasets[0].test_sets] == ["tumour_test", "ms_test"]


def test_paper_experiment_holds_the_step_matched_controls():
    experiment = load_experiment("paper")
    steps = {row: resolve_config(experiment.method_of(row), "paper", experiment.overrides_of(row))["train"]
             for row in ("ddpm", "pddpm", "mddpm-fpmcm", "ddpm-115k", "pddpm-115k", "mddpm-fpmcm-19k")}
    assert {row: (t["max_steps"], t["val_every"], t["val_batches"]) for row, t in steps.items()} == {
        "ddpm": (19200, 12, 2), "pddpm": (19200, 12, 2), "mddpm-fpmcm": (115200, 72, 8),  # the released code's
        "ddpm-115k": (115200, 72, 8), "pddpm-115k": (115200, 72, 8), "mddpm-fpmcm-19k": (19200, 12, 2)}
    assert {"ddpm-115k", "pddpm-115k", "mddpm-fpmcm-19k"} <= set(experiment.extra_rows)
    assert all("not in the paper" in experiment.label(row) for row in ("ddpm-115k", "pddpm-115k", "mddpm-fpmcm-19k"))


def test_a_variant_row_trains_its_method_with_its_settings_on_its_runs(tmp_path, phantom_dataset, fake_stages):
    path = write_experiment(tmp_path, methods=["intensity", "vae", "vae-short"],
                            variants={"vae-short": {"method": "vae", "overrides": ["train.max_steps=2"],
                                                    "runs": {"seeds": [2]}}})
    experiment = load_experiment(path)
    assert [(s.method, s.run.tag) for s in plan(experiment, tmp_path / "out") if s.kind == "train"] == [
        ("intensity", "seed1"), ("intensity", "seed2"), ("vae", "seed1"), ("vae", "seed2"), ("vae-short", "seed2")]
    run_benchmark(path, out=tmp_path / "out", data={"phantom": str(phantom_dataset)}, report=False, progress=False)
    config = read_json(tmp_path / "out/runs/phantom/vae-short/seed2/train/config.json")
    assert (config["method"], config["train"]["max_steps"], config["train"]["seed"]) == ("vae", 2, 2)
    table = read_json(tmp_path / "out/table.json")
    assert [row["method"] for row in table["rows"]] == ["intensity", "vae", "vae-short"]
    assert experiment.to_json()["variants"]["vae-short"]["runs"] == {"seeds": [2]}
    for bad, message in (({"vae": {"method": "vae"}}, "no method's"), ({"x": {"method": "nope"}}, "needs a known"),
                         ({"x": {"method": "vae", "runs": {"folds": [0]}}}, "like the experiment's")):
        rows = ["intensity", *bad]
        with pytest.raises(MddpmError, match=message):
            load_experiment(write_experiment(tmp_path, methods=rows, variants=bad))


def test_generalisation_experiment_scores_each_family_in_and_out_of_family():
    experiment = load_experiment("generalisation")
    assert experiment.methods == ["vae", "dae", "ddpm", "pddpm", "mddpm-fpmcm", "intensity"]
    for d, other in zip(experiment.datasets, ("varied", "template")):
        assert d.synth == {"size": "demo-unseen", "seed": 0, "family": d.name, "test_families": [other]}
        tests = {t.name: (t.test, t.val) for t in d.test_sets}
        assert tests["rings"] == ("rings_test", "tumour_val")  # test-only kinds: the tumour threshold
        assert tests[f"{other}-tumour"] == (f"{other}_tumour_test", f"{other}_tumour_val")
        assert len(tests) == 10


def test_a_train_setting_added_later_at_its_default_keeps_old_runs(tmp_path):
    from mddpm.benchmark.plan import _config_difference

    saved = {"train": {"lr": 1e-3}, "method": "vae"}
    assert _config_difference({"train": {"lr": 1e-3, "augment": "none"}, "method": "vae"}, saved) is None
    assert "train.augment" in _config_difference({"train": {"lr": 1e-3, "augment": "all"}, "method": "vae"}, saved)


@pytest.mark.parametrize("changes, message", [
    ({"methods": ["intensity", "nope"]}, "unknown method 'nope'"),
    ({"runs": {"folds": [0], "seeds": [1]}}, "runs must be"),
    ({"runs": {"seeds": [1, 1]}}, "twice"),
    ({"colour": "red"}, "unknown key"),
    ({"reference": "dae"}, "reference 'dae'"),
    ({"overrides": {"vae": ["train.nope=1"]}}, "overrides of 'vae'"),
    ({"thresholds": ["median"]}, "unknown threshold rule"),
    ({"runs": {"folds": [0]}}, "healthy_val needs seed runs"),
    ({"published": {"values": {"vae": {"blob": {"dice": ["high", 1.0]}}}}}, r"published vae/blob/dice: expected"),
    ({"datasets": [{"name": "s", "path": None, "synth": {"size": "demo", "family": "average"},
                    "test_sets": [{"name": "t", "test": "tumour_test", "val": "tumour_val"}]}]}, "synth must be"),
])
def test_bad_experiments_name_the_file_and_problem(tmp_path, changes, message):
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment_dict(**changes)))
    with pytest.raises(MddpmError, match=message) as err:
        load_experiment(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_unknown_experiment_and_bad_data_arguments(tmp_path):
    with pytest.raises(MddpmError, match="shipped experiments: generalisation, paper, synthetic"):
        load_experiment("no-such-experiment")
    assert parse_data_args(["ixi=/data/x=y"]) == {"ixi": "/data/x=y"}
    with pytest.raises(MddpmError, match="NAME=PATH"):
        parse_data_args(["ixi"])
    with pytest.raises(MddpmError, match="--data ixi"):  # the paper experiment needs its data
        run_benchmark("paper", out=tmp_path / "out")
    with pytest.raises(MddpmError, match="no dataset of that name"):
        run_benchmark("paper", out=tmp_path / "out", data={"brats": str(tmp_path)})


def test_plan_lists_every_stage_in_order(tmp_path):
    experiment = load_experiment("paper")
    stages = plan(experiment, tmp_path)
    # per run: train, predict 4 splits (2 val + 2 test), evaluate 2 test sets
    assert len(stages) == 14 * 5 * 7  # 11 rows of Table 1 and the released sampler, 3 step-matched controls
    assert [s.name for s in stages[:7]] == ["train", "predict/brats21_val", "predict/brats21_test", "predict/mslub_val",
                                           "predict/mslub_test", "evaluate/BraTS21", "evaluate/MSLUB"]
    assert {s.method for s in plan(experiment, tmp_path, only=["dae"])} == {"dae"}


# ---- resume (stages mocked) ---------------------------------------------------------------------

def test_resume_skips_finished_stages_and_reruns_changed_ones(tmp_path, phantom_dataset, fake_stages):
    experiment, out, data = write_experiment(tmp_path), tmp_path / "out", {"phantom": str(phantom_dataset)}
    first = run_benchmark(experiment, out=out, data=data, report=False, device="cpu", log=lambda m: None)
    assert len(fake_stages) == 2 * 2 * 5 and {r["status"] for r in first["stages"]} == {"ran"}
    assert (out / "table.md").is_file() and (out / "table.csv").is_file() and (out / "benchmark.json").is_file()
    cell = first["table"]["rows"][1]["cells"]["phantom/blob"]
    assert cell["dice"]["mean"] == pytest.approx(0.45) and cell["p_dice"]["n_pairs"] == 4

    fake_stages.clear()
    second = run_benchmark(experiment, out=out, data=data, report=False, device="cpu", log=lambda m: None)
    assert fake_stages == [] and {r["status"] for r in second["stages"]} == {"skipped"}

    # new weights for one run: its predictions and evaluation run again, nothing else
    (out / "runs/phantom/vae/seed1/train/best.pt").write_bytes(b"other weights")
    run_benchmark(experiment, out=out, data=data, report=False, device="cpu", log=lambda m: None)
    assert sorted(c[2] for c in fake_stages) == ["evaluate/blob", "predict/lesion_test", "predict/lesion_val",
                                                  "predict/val"]
    assert {(c[0], c[1]) for c in fake_stages} == {("vae", "seed1")}

    # an interrupted training continues from its last checkpoint
    fake_stages.clear()
    run = out / "runs/phantom/intensity/seed2/train"
    (run / "best.pt").unlink()
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    run_benchmark(experiment, out=out, data=data, report=False, device="cpu", log=lambda m: None)
    assert fake_stages[0] == ("intensity", "seed2", "train", "resume") and len(fake_stages) == 5


def test_interrupted_training_time_is_added_when_resumed(tmp_path, phantom_dataset, fake_stages, monkeypatch):
    out, data = tmp_path / "out", {"phantom": str(phantom_dataset)}
    experiment = write_experiment(tmp_path, methods=["intensity"])
    fake = execute.run_stage

    def interrupted(stage, status, *args):
        if stage.kind == "train" and stage.run.tag == "seed2" and status != "resume":
            (stage.paths.train / "checkpoints").mkdir(parents=True)
            (stage.paths.train / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
            config = expected_run_config(load_experiment(experiment), stage, args[1])
            write_json(stage.paths.train / "config.json", {**config, "prepared": "/cache"})
            raise MddpmError("training interrupted")
        fake(stage, status, *args)

    monkeypatch.setattr(execute, "run_stage", interrupted)
    with pytest.raises(MddpmError, match="interrupted"):
        run_benchmark(experiment, out=out, data=data, report=False, device="cpu", log=lambda m: None)
    record = json.loads((out / "runs/phantom/intensity/seed2/stages.json").read_text())["train"]
    assert set(record) == {"interrupted_seconds", "interrupted_cpu_seconds"} and record["interrupted_seconds"] > 0
    spent = record["interrupted_seconds"]
    assert stage_seconds(load_experiment(experiment), out)["intensity"]["runs"] == 1  # only seed1 finished
    result = run_benchmark(experiment, out=out, data=data, report=False, device="cpu", log=lambda m: None)
    resumed = [r for r in result["stages"] if r["run"] == "seed2" and r["stage"] == "train"][0]
    record = json.loads((out / "runs/phantom/intensity/seed2/stages.json").read_text())["train"]
    assert record["seconds"] == pytest.approx(resumed["seconds"] + spent) and "finished" in record
    assert fake_stages[-5][2:] == ("train", "resume")


def test_changed_grid_config_needs_force(tmp_path, phantom_dataset, fake_stages):
    out, data = tmp_path / "out", {"phantom": str(phantom_dataset)}
    run_benchmark(write_experiment(tmp_path), out=out, data=data, report=False, device="cpu", log=lambda m: None)
    fake_stages.clear()
    changed = write_experiment(tmp_path, overrides={"vae": ["train.max_steps=7"]})
    with pytest.raises(MddpmError, match=r"config.json: train.max_steps: \d+ \(saved\) != 7 \(experiment\)"):
        run_benchmark(changed, out=out, data=data, report=False, device="cpu", log=lambda m: None)
    assert fake_stages == []
    run_benchmark(changed, out=out, data=data, report=False, device="cpu", force=True, log=lambda m: None)
    assert [c[:3] for c in fake_stages if c[2] == "train"] == [("vae", "seed1", "train"), ("vae", "seed2", "train")]
    assert len(fake_stages) == 10

    with pytest.raises(MddpmError, match="already exists"):
        run_benchmark(changed, out=out, data=data, resume=False, report=False, device="cpu", log=lambda m: None)


def test_only_and_dry_run(tmp_path, phantom_dataset, fake_stages, capsys):
    out, data, experiment = tmp_path / "out", {"phantom": str(phantom_dataset)}, write_experiment(tmp_path)
    dry = run_benchmark(experiment, out=out, data=data, dry_run=True)
    assert fake_stages == [] and not out.exists() and len(dry["stages"]) == 20
    assert "20 stages: 0 done, 20 to run" in capsys.readouterr().out
    first_run = run_benchmark(experiment, out=out, data=data, dry_run=True, runs=1)
    assert {s["run"] for s in first_run["stages"]} == {"seed1"}
    result = run_benchmark(experiment, out=out, data=data, only=["vae"], report=False, device="cpu", log=lambda m: None)
    assert {c[0] for c in fake_stages} == {"vae"} and len(fake_stages) == 10
    assert [r["method"] for r in result["table"]["rows"] if r["cells"]] == ["vae"]
    with pytest.raises(MddpmError, match="--only dae"):
        run_benchmark(experiment, out=out, data=data, only=["dae"])

    fake_stages.clear()
    (out / "table.md").unlink()
    rebuilt = run_benchmark(experiment, out=out, table_only=True, report=False, log=lambda m: None)
    assert fake_stages == [] and (out / "table.md").is_file()
    assert rebuilt["table"]["rows"] == result["table"]["rows"]
    with pytest.raises(MddpmError, match="no finished evaluation"):
        run_benchmark(experiment, out=tmp_path / "empty", table_only=True, log=lambda m: None)

    # evaluations of one dataset made on two different folders cannot share a table
    for tag, folder in (("seed1", "/data/a"), ("seed2", "/data/b")):
        path = out / f"runs/phantom/vae/{tag}/eval/blob/metrics.json"
        content = json.loads(path.read_text())
        content["test"]["dataset"] = folder
        path.write_text(json.dumps(content))
    with pytest.raises(MddpmError, match="seed2/eval/blob/metrics.json: evaluated on /data/b, but .*/data/a"):
        run_benchmark(experiment, out=out, table_only=True, report=False, log=lambda m: None)


def test_default_output_folder_and_the_old_one(tmp_path, phantom_dataset, fake_stages, monkeypatch):
    monkeypatch.chdir(tmp_path)
    experiment, data, notes = write_experiment(tmp_path), {"phantom": str(phantom_dataset)}, []
    result = run_benchmark(experiment, data=data, report=False, device="cpu", log=notes.append)
    assert result["out"] == str(tmp_path / "benchmark_out" / "tiny") and not notes[0].startswith("note")
    (tmp_path / "benchmark_out").rename(tmp_path / "benchmarks")  # an earlier benchmark in the old default
    fake_stages.clear()
    again = run_benchmark(experiment, data=data, report=False, device="cpu", log=notes.append)
    assert again["out"] == str(tmp_path / "benchmarks" / "tiny") and fake_stages == []
    assert any(n.startswith("note: resuming benchmarks/tiny, the old default output folder") for n in notes)


def test_cli_dry_run_and_bad_experiment(tmp_path, phantom_dataset, capsys):
    experiment = write_experiment(tmp_path)
    assert main(["benchmark", str(experiment), "--out", str(tmp_path / "o"), "--data", f"phantom={phantom_dataset}",
                 "--dry-run"]) == 0
    assert "todo    phantom intensity seed1 train" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["benchmark", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mddpm benchmark: error: ") and str(bad) in err and "\n" not in err


# ---- end to end ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_intensity_grid_end_to_end_then_resumed(tmp_path, phantom_dataset):
    """The real stages on the phantom dataset: the intensity method needs no training (slow: ~8 s of CPU,
    mostly preparing the dataset's cache in worker processes)."""
    experiment = write_experiment(tmp_path, methods=["intensity"], runs={"seeds": [5]}, figures=1,
                                   thresholds=["bisection", "exact"])
    out, data = tmp_path / "out", {"phantom": str(phantom_dataset)}
    first = run_benchmark(experiment, out=out, data=data, device="cpu", progress=False, log=lambda m: None)
    assert [r["status"] for r in first["stages"]] == ["ran"] * 5
    run = out / "runs/phantom/intensity/seed5"
    assert json.loads((run / "train/config.json").read_text())["train"]["seed"] == 5
    saved = json.loads((run / "eval/blob/metrics.json").read_text())
    cell = first["table"]["rows"][0]["cells"]["phantom/blob"]
    assert cell["dice"]["mean"] == pytest.approx(saved["aggregate"]["rules"]["bisection"]["dice"]["mean"])
    assert set(cell["dice_by_rule"]) >= {"bisection", "exact", "fpr-0.05"}
    html = (out / "report.html").read_text()
    assert 'alt="precision-recall phantom/blob"' in html and html.count("<img") >= 2  # curve + example cases
    # the report shows what evaluate stored: its pooled curve and its example cases (the first run only)
    assert json.loads((run / "eval/blob/pr.json").read_text())["volumes"] == len(saved["cases"])
    listed = json.loads((run / "eval/blob/examples/examples.json").read_text())["examples"]
    assert listed and all((run / "eval/blob/examples" / e["file"]).is_file() for e in listed)
    second = run_benchmark(experiment, out=out, data=data, device="cpu", progress=False, log=lambda m: None)
    assert [r["status"] for r in second["stages"]] == ["skipped"] * 5
