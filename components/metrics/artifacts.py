"""The JSON files the evaluation step leaves (evaluation.json, exports.json) as types, and how any run file is read.

They are published with the run and read back by the report and by publish, also from runs that
older versions of pogona wrote: every field a file may lack is optional, and a field that is
absent stays absent when the record is written again, so a file's content survives the round trip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from components.errors import UserError
from components.metrics.results_csv import METRICS

Record = TypeVar("Record")


def read_json(path: Path | None, what: str) -> Any:
    """A JSON input file (None when not given); a missing or broken file is a UserError naming it."""
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what} file") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: the {what} is not valid JSON ({exc})") from None


def load_record(path: Path | None, what: str, parse: Callable[[Any, str], Record]) -> Record | None:
    """A typed record from its file (None when not given), every error naming the file."""
    return None if path is None else parse(read_json(path, what), str(path))


def parse_record(document: Any, where: str, what: str, build: Callable[[dict[str, Any]], Record]) -> Record:
    """`build` applied to a JSON object; a document of another shape is a UserError naming `where`."""
    try:
        if not isinstance(document, dict):
            raise TypeError(f"a JSON object is expected, not {type(document).__name__}")
        return build(document)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{where}: not {what} ({exc})") from None


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields that hold a value: an absent one stays absent in the file."""
    return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True)
class Scores:
    """Ultralytics' validator figures of one split or modality; `images` is counted per modality."""

    precision: float | None = None
    recall: float | None = None
    map50: float | None = None
    map50_95: float | None = None
    images: int | None = None

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Scores:
        return cls(**{key: document.get(key) for key in (*METRICS, "images")})

    def to_json(self) -> dict[str, Any]:
        return _present({"precision": self.precision, "recall": self.recall, "map50": self.map50,
                         "map50_95": self.map50_95, "images": self.images})

    def values(self) -> dict[str, float]:
        """The metrics present, by their METRICS keys."""
        return {key: float(value) for key, value in self.to_json().items() if key in METRICS}


@dataclass(frozen=True)
class WorstImage:
    """One drawn validation image of the worst ones (components.evaluation.failures)."""

    key: str
    missed: int
    false_detections: int
    caption: str
    drawing: str  # path relative to evaluation.json's folder


@dataclass(frozen=True)
class Evaluation:
    """evaluation.json: best.pt on the val split, overall and per modality, and on test when there is one.

    A dataset without modalities has an empty `by_modality`, and its worst images are grouped as "overall".
    """

    weights: str | None = None
    imgsz: int | None = None
    device: str | None = None
    overall: Scores = field(default_factory=Scores)
    by_modality: dict[str, Scores] = field(default_factory=dict)
    speed_ms: dict[str, float] | None = None
    worst_images: dict[str, tuple[WorstImage, ...]] | None = None  # absent from evaluations before the drawings
    splits: dict[str, Scores] = field(default_factory=dict)

    @classmethod
    def from_json(cls, document: Any, where: str) -> Evaluation:
        def build(doc: dict[str, Any]) -> Evaluation:
            worst = doc.get("worst_images")
            return cls(doc.get("weights"), doc.get("imgsz"), doc.get("device"), Scores.from_json(doc.get("overall") or {}),
                       {name: Scores.from_json(values) for name, values in (doc.get("by_modality") or {}).items()},
                       doc.get("speed_ms"),
                       None if worst is None else {modality: tuple(WorstImage(**record) for record in records)
                                                   for modality, records in worst.items()},
                       {name: Scores.from_json(values) for name, values in (doc.get("splits") or {}).items()})
        return parse_record(document, where, "an evaluation", build)

    @classmethod
    def load(cls, path: Path | None) -> Evaluation | None:
        return load_record(path, "evaluation", cls.from_json)

    def to_json(self) -> dict[str, Any]:
        document = _present({
            "weights": self.weights, "imgsz": self.imgsz, "device": self.device, "overall": self.overall.to_json(),
            "by_modality": {name: scores.to_json() for name, scores in self.by_modality.items()},
            "speed_ms": self.speed_ms,
            "worst_images": None if self.worst_images is None else {
                modality: [record.__dict__ for record in records] for modality, records in self.worst_images.items()}})
        if self.splits:
            document["splits"] = {name: scores.to_json() for name, scores in self.splits.items()}
        return document

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


@dataclass(frozen=True)
class ExportedModel:
    """One exported model and what it measured; TensorRT engines are not measured here (None)."""

    format: str
    file: str
    size_bytes: int = 0
    precision: str | None = None  # "fp32", "int8", "fp16"
    device: str | None = None  # where it was measured
    map50: float | None = None
    map50_95: float | None = None
    latency_ms: float | None = None
    calibration_images: int | None = None  # INT8 only

    def to_json(self) -> dict[str, Any]:
        document = dict(self.__dict__)
        if self.calibration_images is None:
            del document["calibration_images"]
        return document


@dataclass(frozen=True)
class Exports:
    """exports.json: the models exported from best.pt, side by side."""

    weights: str | None = None
    data: str | None = None
    imgsz: int | None = None
    device: str | None = None  # where ultralytics exported
    models: tuple[ExportedModel, ...] = ()

    @classmethod
    def from_json(cls, document: Any, where: str) -> Exports:
        def build(doc: dict[str, Any]) -> Exports:
            return cls(doc.get("weights"), doc.get("data"), doc.get("imgsz"), doc.get("device"),
                       tuple(ExportedModel(**model) for model in doc.get("models") or ()))
        return parse_record(document, where, "an exports record", build)

    @classmethod
    def load(cls, path: Path | None) -> Exports | None:
        return load_record(path, "exports", cls.from_json)

    def to_json(self) -> dict[str, Any]:
        return {**_present({"weights": self.weights, "data": self.data, "imgsz": self.imgsz, "device": self.device}),
                "models": [model.to_json() for model in self.models]}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def model(self, name: str) -> ExportedModel | None:
        return next((model for model in self.models if model.format == name), None)
