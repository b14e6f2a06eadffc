"""KFP component bodies: each adapts artifact paths and parameters, then calls `pipelines.steps`.

KFP ships these functions to the pod as source text, so every import sits inside the body and
the body stays a call or two. A training or sanity configuration arrives as one input per run
parameter that sets one of its fields, named and typed as in `RunParameters` (a test holds the
two together), and `config_from_run` builds it from the body's arguments. `build_components`
binds the bodies to the project's images (the project is installed there: no pip at pod start).

KFP starts a body as `sh -ec '... python3 -m kfp.dsl.executor_main ...'`. The shell would stay
between KFP's launcher and Python, and dash does not pass SIGTERM on to its child: an eviction
would end the shell and leave Python's cleanup to be cut off. `build_components` makes the shell
`exec` Python, so the step's own process is the launcher's child and receives the signal.
"""

from dataclasses import dataclass
from typing import Callable, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Model, Output


def validate_dataset(dataset_uri: str, manifest: Output[Artifact], validation_report: Output[Markdown],
                     dataset_metrics: Output[Metrics]) -> str:
    """List and check the dataset; write the snapshot manifest; return its fingerprint."""
    from pipelines.steps import validate_step

    fingerprint, counts = validate_step(dataset_uri, manifest.path, validation_report.path)
    for name, value in counts.items():
        dataset_metrics.log_metric(name, value)
    return fingerprint


def decide_training(store_uri: str, model_name: str, fingerprint: str, skip_if_unchanged: bool, code_version: str,
                    num_gpus: str, model: str, base_weights_uri: str, epochs: int, patience: int, imgsz: int,
                    batch: float, training_device: str, sanity_epochs: int, sanity_batch: int, sanity_imgsz: int,
                    sanity_max_images: int, sanity_min_loss_drop: float, sanity_min_map50: float,
                    ) -> NamedTuple("Decision", [("train", bool), ("note", str), ("attempt", str)]):
    """Refuse bad settings; train unless an earlier run trained this dataset snapshot with this code and these
    parameters."""
    from collections import namedtuple

    from components.config import SanityConfig, TrainConfig, config_from_run
    from pipelines.steps import decide_training as decide

    train, sanity = config_from_run(TrainConfig, locals()), config_from_run(SanityConfig, locals())
    decision, attempt = decide(store_uri, model_name, fingerprint, code_version, train, sanity, num_gpus,
                               skip_if_unchanged)
    print(decision.note)
    return namedtuple("Decision", ["train", "note", "attempt"])(decision.train, decision.note, attempt.to_json())


def sanity_gate(manifest: Input[Artifact], store_uri: str, model: str, base_weights_uri: str, sanity_epochs: int,
                sanity_batch: int, sanity_imgsz: int, sanity_max_images: int, sanity_min_loss_drop: float,
                sanity_min_map50: float, verdict: Output[Artifact], sanity_metrics: Output[Metrics]):
    """CPU sanity gate: fails the run (no GPU time spent) when training is dead or not learning."""
    from components.config import SanityConfig, config_from_run
    from pipelines.steps import sanity_step

    config = config_from_run(SanityConfig, locals())
    for name, value in sanity_step(manifest.path, verdict.path, config, model, base_weights_uri,
                                   store_uri).items():
        sanity_metrics.log_metric(name, value)


def train_detector(manifest: Input[Artifact], verdict: Input[Artifact], store_uri: str, run_id: str,
                   kfp_run_id: str, num_gpus: str, model: str, base_weights_uri: str, epochs: int, patience: int,
                   imgsz: int, batch: float, training_device: str, trained: Output[Model],
                   train_metrics: Output[Metrics]):
    """Multi-epoch training; checkpoints go to the store every epoch so a retried pod resumes."""
    from components.config import TrainConfig, config_from_run
    from pipelines.steps import train_step

    config = config_from_run(TrainConfig, locals())
    for name, value in train_step(manifest.path, trained.path, config, num_gpus, store_uri, run_id or kfp_run_id,
                                  kfp_run_id).items():
        train_metrics.log_metric(name, value)


def evaluate_and_report(manifest: Input[Artifact], trained: Input[Model], verdict: Input[Artifact],
                        store_uri: str, model_name: str, export_formats: str, min_map50: float, min_margin: float,
                        analysis: Output[Artifact],
                        report: Output[HTML], run_summary: Output[Markdown], final_metrics: Output[Metrics]):
    """Per-modality evaluation, exports and the analysis report (HTML with plots, Markdown)."""
    import shutil
    from pathlib import Path

    from components.config import PromotionConfig
    from pipelines.steps import analyze_step

    promotion = PromotionConfig(min_map50=min_map50, min_margin_map50_95=min_margin)
    for name, value in analyze_step(manifest.path, trained.path, verdict.path, analysis.path, store_uri,
                                    model_name, export_formats, promotion).items():
        final_metrics.log_metric(name, value)
    shutil.copyfile(Path(analysis.path) / "report" / "report.html", report.path)
    shutil.copyfile(Path(analysis.path) / "report" / "report.md", run_summary.path)


def publish_model(manifest: Input[Artifact], validation_report: Input[Markdown], verdict: Input[Artifact],
                  trained: Input[Model], analysis: Input[Artifact], store_uri: str, run_id: str, kfp_run_id: str,
                  model_name: str, min_map50: float, min_margin: float, attempt: str,
                  decision: Output[Markdown]) -> bool:
    """Upload the run to the store, then promote it if it beats the champion (pointer written last)."""
    import tempfile
    from pathlib import Path

    from components.publishing.attempts import Attempt
    from components.config import PromotionConfig
    from pipelines.steps import assemble_run_dir, publish_step

    with tempfile.TemporaryDirectory() as work:
        run_dir = assemble_run_dir(Path(work) / "run", manifest.path, validation_report.path, verdict.path,
                                   trained.path, analysis.path)
        promoted, outcome = publish_step(run_dir, store_uri, run_id or kfp_run_id, model_name,
                                         PromotionConfig(min_map50=min_map50, min_margin_map50_95=min_margin),
                                         Attempt.from_json(attempt))
    Path(decision.path).write_text(f"# Publish\n\n{outcome}\n")
    print(outcome)
    return promoted


def training_skipped(note: str, summary: Output[Markdown]):
    """The green end of a nightly run with nothing new to learn from."""
    from pathlib import Path

    Path(summary.path).write_text(f"# Training skipped\n\n{note}\n")
    print(note)


@dataclass(frozen=True)
class Components:
    validate: Callable
    decide: Callable
    sanity: Callable
    train: Callable
    analyze: Callable
    publish: Callable
    skipped: Callable


def build_components(cpu_image: str, cuda_image: str) -> Components:
    """Bind the bodies to images; the CUDA image only for training."""
    def on(image: str, func: Callable) -> Callable:
        return _exec_python(dsl.component(func=func, base_image=image, install_kfp_package=False))

    return Components(validate=on(cpu_image, validate_dataset), decide=on(cpu_image, decide_training),
                      sanity=on(cpu_image, sanity_gate), train=on(cuda_image, train_detector),
                      analyze=on(cpu_image, evaluate_and_report), publish=on(cpu_image, publish_model),
                      skipped=on(cpu_image, training_skipped))


# How KFP's lightweight component command starts Python (kfp/dsl/component_factory.py, kfp 2.x).
_KFP_STARTS_PYTHON = "_KFP_RUNTIME=true python3 "


def _exec_python(component: Callable) -> Callable:
    """Make the component's shell replace itself with Python (see the module's docstring); a KFP that builds the
    command differently fails the compile here rather than shipping a shell that keeps the signal."""
    container = component.component_spec.implementation.container
    shell, flags, script, *rest = container.command
    if (shell, flags) != ("sh", "-ec") or script.count(_KFP_STARTS_PYTHON) != 1:
        raise RuntimeError(f"unexpected KFP component command {container.command[:3]!r}: cannot make it exec Python")
    container.command = [shell, flags, script.replace(_KFP_STARTS_PYTHON, "_KFP_RUNTIME=true exec python3 "), *rest]
    return component
