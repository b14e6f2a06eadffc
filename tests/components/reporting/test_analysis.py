"""A run's analysis comes from results.csv (and args.yaml): losses, learning rate, convergence, status."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from components.reporting.analysis import Analysis, analyze
from components.metrics.results_csv import read_history
from components.training.deadrun import Verdict
from results_table import FIXTURES, first_within_one_percent, read_csv


def analysis_of(results: Path) -> Analysis:
    return analyze(read_history(results))


def test_numbers_equal_those_in_results_csv() -> None:
    source = FIXTURES / "converged_early" / "results.csv"
    table = read_csv(source)
    analysis = analysis_of(source)

    for loss in analysis.losses:
        assert loss.start == table[loss.column][0] and loss.final == table[loss.column][-1]
        expected_change = (table[loss.column][-1] - table[loss.column][0]) / table[loss.column][0] * 100
        assert loss.change_pct == pytest.approx(expected_change)
    assert {loss.column for loss in analysis.losses} == {
        f"{split}/{kind}" for split in ("train", "val") for kind in ("box_loss", "cls_loss", "dfl_loss")}

    map50_95 = table["metrics/mAP50-95(B)"]
    best = analysis.metrics["map50_95"]
    assert best.best == max(map50_95) and best.best_epoch == map50_95.index(max(map50_95)) + 1
    assert best.final == map50_95[-1]
    assert analysis.learning_rate.start == table["lr/pg0"][0]
    assert analysis.learning_rate.end == table["lr/pg0"][-1]


def test_converged_early_run_converges_at_the_first_epoch_within_one_percent() -> None:
    source = FIXTURES / "converged_early" / "results.csv"
    analysis = analysis_of(source)
    assert analysis.convergence.converged_epoch == first_within_one_percent(read_csv(source)["metrics/mAP50-95(B)"])
    assert not analysis.convergence.overfitting
    assert analysis.learning_rate.observed == "cosine" and analysis.learning_rate.matches


def test_a_run_that_ends_before_its_epoch_cap_stopped_early(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "converged_early", run)
    args = run / "args.yaml"
    args.write_text(args.read_text().replace("epochs: 40", "epochs: 100"))
    assert analysis_of(run / "results.csv").convergence.early_stopped


def test_overfitting_is_found_at_the_validation_loss_minimum() -> None:
    source = FIXTURES / "overfitting" / "results.csv"
    table = read_csv(source)
    val_total = [sum(values) for values in zip(*(table[f"val/{k}"] for k in ("box_loss", "cls_loss", "dfl_loss")))]
    analysis = analysis_of(source)

    convergence = analysis.convergence
    assert convergence.overfitting and convergence.val_loss_min_epoch == val_total.index(min(val_total)) + 1
    assert convergence.val_loss_rise_pct == pytest.approx((val_total[-1] - min(val_total)) / min(val_total) * 100)
    assert analysis.learning_rate.observed == "linear" and analysis.learning_rate.matches


def test_a_run_whose_losses_stayed_zero_is_dead() -> None:
    assert analysis_of(FIXTURES / "dead_mps" / "results.csv").status is Verdict.DEAD


def test_a_run_whose_losses_fell_to_a_useful_map50_is_healthy() -> None:
    assert analysis_of(FIXTURES / "converged_early" / "results.csv").status is Verdict.HEALTHY


def test_schedule_that_differs_from_the_configuration_is_flagged(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "converged_early", run)
    args = run / "args.yaml"
    args.write_text(args.read_text().replace("cos_lr: true", "cos_lr: false"))
    learning_rate = analysis_of(run / "results.csv").learning_rate
    assert learning_rate.configured == "linear"
    assert learning_rate.observed == "cosine" and learning_rate.matches is False


@pytest.mark.slow
def test_a_real_two_epoch_ultralytics_run_did_not_learn(trained_run: Path) -> None:
    analysis = analysis_of(trained_run / "results.csv")
    assert analysis.epochs_run == 2
    assert analysis.status is Verdict.NOT_LEARNING
