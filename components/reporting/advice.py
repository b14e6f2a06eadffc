"""Advice from a run's analysis: the recommended actions and the overall assessment.

Every recommendation and the assessment carry the number that triggered them, so a failed run
reads as failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.data.dataset_layout import NO_MODALITY, NO_MODALITY_GROUP
from components.metrics.artifacts import Evaluation, Exports
from components.metrics.run_metrics import sanity_metrics
from components.training.deadrun import Verdict
from components.reporting.analysis import OSCILLATION_DROP, Analysis

WEAK_MODALITY_GAP = 0.05       # mAP50-95 gap between modalities that calls for more data
INT8_TOLERANCE = 0.02          # INT8 may lose this much mAP50-95 against FP32 and still be recommended


@dataclass(frozen=True)
class Recommendation:
    action: str
    trigger: str


def recommend(analysis: Analysis, evaluation: Evaluation | None,
              exports: Exports | None) -> tuple[Recommendation, ...]:
    """Actions derived from the numbers; each names the value that triggered it. A run that learned nothing
    gets one: do not use it; any other run, what its convergence, its modalities and its exports call for."""
    if analysis.status == Verdict.DEAD:
        return (Recommendation(
            "Do not use these weights. Re-run the CPU sanity gate and train on CUDA (never MPS); check AMP.",
            f"every training loss was 0 or NaN for all {analysis.epochs_run} epochs"),)
    if analysis.status == Verdict.NOT_LEARNING:
        return (Recommendation(
            "Do not use these weights. Check the labels against the images, then train longer or from "
            "pretrained weights.", _not_learning_trigger(analysis)),)
    return (*_convergence_advice(analysis), *_modality_advice(evaluation), *_export_advice(exports))


def _convergence_advice(analysis: Analysis) -> list[Recommendation]:
    """The epoch count, patience, augmentation and learning rate that the mAP and loss curves call for."""
    conv = analysis.convergence
    if conv is None:
        return []
    found: list[Recommendation] = []
    if conv.converged_epoch <= 0.8 * conv.epochs_run and not conv.early_stopped:
        found.append(Recommendation(
            f"Train for about {conv.recommended_epochs} epochs instead of {conv.epochs_configured or conv.epochs_run}.",
            f"mAP50-95 was within 1% of its best ({analysis.metrics['map50_95'].best:.3f}) from epoch "
            f"{conv.converged_epoch} of {conv.epochs_run}"))
        if conv.patience is not None and conv.epochs_run - conv.converged_epoch > conv.patience:
            found.append(Recommendation(
                f"Lower patience below {conv.patience} or rely on the epoch cap: gains under 1% kept resetting it.",
                f"a {conv.epochs_run - conv.converged_epoch}-epoch plateau did not trigger early stopping "
                f"(patience {conv.patience})"))
    if conv.early_stopped:
        found.append(Recommendation(
            f"Set epochs to about {conv.recommended_epochs}: early stopping ended the run well before the cap.",
            f"stopped at epoch {conv.epochs_run} of {conv.epochs_configured} (patience {conv.patience}); "
            f"mAP50-95 within 1% of its best from epoch {conv.converged_epoch}"))
    if conv.converged_epoch == conv.epochs_run and conv.epochs_run > 1 and not conv.early_stopped:
        found.append(Recommendation(
            "Train longer: the metrics were still improving when the run ended.",
            f"best mAP50-95 {analysis.metrics['map50_95'].best:.3f} came at the last epoch ({conv.epochs_run})"))
    if conv.overfitting:
        found.append(Recommendation(
            "Add data augmentation (or more data) and stop near the validation-loss minimum.",
            f"validation loss rose {conv.val_loss_rise_pct:.1f}% after its minimum at epoch "
            f"{conv.val_loss_min_epoch} while training loss changed {conv.train_loss_change_pct:.1f}%"))
    if conv.swings >= 2:
        found.append(Recommendation(
            "Lower lr0 or raise the batch size to steady the optimisation.",
            f"mAP50-95 dropped by more than {OSCILLATION_DROP:.0%} of its best {conv.swings} times "
            f"(largest drop {conv.largest_swing:.3f})"))
    return found


def _modality_advice(evaluation: Evaluation | None) -> list[Recommendation]:
    """More labels for a modality that scores well below the best one. The images without a modality are no
    modality one could label more of: they are left out."""
    scored = {name: scores.map50_95 for name, scores in (evaluation.by_modality if evaluation else {}).items()
              if scores.map50_95 is not None and name not in (NO_MODALITY_GROUP, NO_MODALITY)}
    if len(scored) < 2:
        return []
    weak, strong = min(scored, key=scored.get), max(scored, key=scored.get)
    if scored[strong] - scored[weak] <= WEAK_MODALITY_GAP:
        return []
    return [Recommendation(f"Label more {weak} images: that modality is the weak one.",
                           f"{weak} mAP50-95 {scored[weak]:.3f} vs {strong} {scored[strong]:.3f}")]


def _export_advice(exports: Exports | None) -> list[Recommendation]:
    """Which ONNX model to deploy on CPU: INT8 when it keeps FP32's accuracy within INT8_TOLERANCE."""
    fp32, int8 = (exports.model("onnx"), exports.model("int8")) if exports else (None, None)
    if fp32 is None or int8 is None or int8.map50_95 is None or fp32.map50_95 is None:
        return []
    loss = fp32.map50_95 - int8.map50_95
    speed = f", {int8.latency_ms:.1f} vs {fp32.latency_ms:.1f} ms/image" if int8.latency_ms and fp32.latency_ms else ""
    if loss <= INT8_TOLERANCE:
        return [Recommendation("Deploy the INT8 ONNX model on CPU: its accuracy holds.",
                               f"INT8 mAP50-95 {int8.map50_95:.3f} vs FP32 {fp32.map50_95:.3f}{speed}")]
    return [Recommendation("Deploy the FP32 ONNX model: INT8 costs too much accuracy.",
                           f"INT8 mAP50-95 {int8.map50_95:.3f} vs FP32 {fp32.map50_95:.3f} "
                           f"(loses {loss:.3f} > {INT8_TOLERANCE})")]


def _not_learning_trigger(analysis: Analysis) -> str:
    best = analysis.metrics["map50"].best if "map50" in analysis.metrics else 0.0
    box = next((loss for loss in analysis.losses if loss.column == "train/box_loss"), None)
    loss_text = f", training box loss {box.start:.3f} -> {box.final:.3f} ({box.trend})" if box else ""
    return f"best mAP50 only {best:.3f} after {analysis.epochs_run} epochs{loss_text}"


def assess(analysis: Analysis, model: dict[str, float], sanity: dict[str, Any] | None,
           champion: dict[str, Any] | None, floor: float) -> str:
    """The 'Overall assessment' paragraph, each sentence driven by a number (a failed run reads as failed).

    `model` is what best.pt measured (components.metrics.run_metrics), the figures promotion judges.
    """
    if analysis.status == Verdict.DEAD:
        return (f"This run failed: every training loss stayed at 0 (or NaN) for all {analysis.epochs_run} epochs, "
                "so the model learned nothing and its metrics are meaningless. This is the signature of a silent "
                "backend failure (seed 004's MPS run); the weights must not be used.")
    if analysis.status == Verdict.NOT_LEARNING:
        return (f"This run did not learn: {_not_learning_trigger(analysis)}. The model is not usable; check the "
                "labels, the data and the training length.")
    map50, map50_95 = model.get("map50", 0.0), model.get("map50_95", 0.0)
    sentences = [f"This run reaches mAP50 {map50:.3f} and mAP50-95 {map50_95:.3f}, which "
                 + (f"meets the production floor of mAP50 {floor:.2f}." if map50 >= floor
                    else f"falls short of the production floor of mAP50 {floor:.2f} by {floor - map50:.3f}.")]
    conv = analysis.convergence
    if conv is not None:
        sentences.append(f"mAP50-95 settled within 1% of its best at epoch {conv.converged_epoch} of "
                         f"{conv.epochs_run}" + (" and early stopping ended the run." if conv.early_stopped else "."))
        sentences.append(
            f"Validation loss rose {conv.val_loss_rise_pct:.1f}% after epoch {conv.val_loss_min_epoch} while "
            "training loss kept falling: the model overfits." if conv.overfitting
            else "Training and validation losses fell together (no sign of overfitting).")
        sentences.append(f"The metrics swung {conv.swings} times (largest mAP50-95 drop {conv.largest_swing:.3f})."
                         if conv.swings >= 2 else "The metrics progressed without significant oscillation.")
    baseline = sanity_metrics(sanity)
    if baseline:
        sentences.append(f"Against the CPU sanity baseline (mAP50 {baseline.get('map50', 0.0):.3f}) this is a change "
                         f"of {map50 - baseline.get('map50', 0.0):+.3f}.")
    if champion and champion.get("metrics", {}).get("map50_95") is not None:
        delta = map50_95 - float(champion["metrics"]["map50_95"])
        sentences.append(f"Against the production champion ({champion.get('run_id', 'unknown run')}, mAP50-95 "
                         f"{champion['metrics']['map50_95']:.3f}) it is {delta:+.3f} mAP50-95"
                         + (" better." if delta > 0 else ", not an improvement."))
    return " ".join(sentences)
