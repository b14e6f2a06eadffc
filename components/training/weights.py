"""Resolve `--weights` / `--model` to something `YOLO()` loads without touching the internet.

A bare name such as "yolo11s.pt" makes ultralytics download it from GitHub; cluster pods and
these machines have no egress. Base weights therefore come from object storage, a local file,
or the image, and only when none holds them is the model built from its architecture YAML:
from scratch, it needs far more epochs than the field notes' figures, which start from
COCO-pretrained weights.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from components import layout
from components.config import cache_root
from components.errors import UserError
from components.log import LOG
from components.storage import ObjectStore, file_matches, open_store, split_uri
from components.runtime.yolo_env import offline_ultralytics

WEIGHTS_DIR_ENV = "POGONA_WEIGHTS_DIR"


@dataclass(frozen=True)
class BaseWeights:
    """What training starts from, and where it came from (recorded in metrics.json and the sanity verdict).

    `source` is "given" (--weights / base_weights_uri), "store" (<store>/weights/<model>.pt), "image"
    ($POGONA_WEIGHTS_DIR/<model>.pt), "scratch" (<model>.yaml) or "resumed" (what a resumed run's first
    attempt loaded); `uri` is where the file came from,
    `path` what `YOLO()` loads (a local copy of a stored file).
    """

    path: str
    source: str
    uri: str
    pretrained: bool

    def record(self) -> dict[str, Any]:
        return asdict(self)


def default_cache_dir() -> Path:
    """Where downloaded base weights are kept between runs."""
    return cache_root() / "weights"


def resolve_weights(weights: str, model: str, cache_dir: Path, store: str = "") -> BaseWeights:
    """The base weights of a run: the given ones; else the model's weights staged in the run's store; else
    those baked into the image; else the model built from its YAML (a `.yaml` model always is)."""
    if weights:
        return _given(weights, cache_dir)
    if model.endswith((".yaml", ".yml")):
        return _scratch(model)
    name = f"{Path(model).stem}.pt"
    if store:
        staged, key = open_store(store), layout.staged_weights(model)
        local = _cached(staged, key, cache_dir)
        if local is not None:
            return BaseWeights(str(local), "store", staged.url(key), pretrained=True)
    baked_dir = os.environ.get(WEIGHTS_DIR_ENV)
    baked = Path(baked_dir) / name if baked_dir else None
    if baked is not None and baked.is_file():
        return BaseWeights(str(baked), "image", str(baked), pretrained=True)
    return _scratch(model)


def staged_weights_version(store: str, model: str) -> str:
    """The version (ETag) of the model's weights staged in the store, which a run without given weights starts
    from; empty when none are staged. Staging other weights is a change a nightly run must not skip."""
    if model.endswith((".yaml", ".yml")):
        return ""
    info = open_store(store).head(layout.staged_weights(model))
    return info.etag if info else ""


def _scratch(model: str) -> BaseWeights:
    """The model built from its YAML, said loudly: the run will need far more epochs than the defaults."""
    architecture = model if model.endswith((".yaml", ".yml")) else f"{Path(model).stem}.yaml"
    LOG.warning(f"training {Path(model).stem} from scratch ({architecture}, no pretrained weights): it needs far "
                "more epochs than the field notes' figures, which assume COCO-pretrained weights; "
                f"`pogona weights stage {Path(model).stem}.pt --store <store>` stages them")
    return BaseWeights(architecture, "scratch", "", pretrained=False)


def _given(weights: str, cache_dir: Path) -> BaseWeights:
    if "://" in weights:
        local = _cached(*split_uri(weights), cache_dir)
        if local is None:
            raise UserError(f"base weights {weights} do not exist")
        return BaseWeights(str(local), "given", weights, pretrained=True)
    path = Path(weights).expanduser()
    if path.is_file():
        return BaseWeights(str(path), "given", str(path), pretrained=True)
    if path.suffix == ".pt" and path.parent == Path("."):
        raise UserError(f"{weights!r} is not a local file, and fetching it by name would download it from the "
                        f"internet; upload it to <store>/weights/{path.name} and pass "
                        f"--weights s3://<bucket>/weights/{path.name} (or a file path)")
    raise UserError(f"base weights {weights!r} not found (give s3://..., file:///... or an existing file)")


def _cached(store: ObjectStore, key: str, cache_dir: Path) -> Path | None:
    """A local copy of a stored object (None when there is none), downloaded only when the cached one differs."""
    info = store.head(key)
    if info is None:
        return None
    local = cache_dir / store.url(key).split("://", 1)[1].lstrip("/")
    if not file_matches(local, info):
        store.download(key, local, expected=info)
    return local


def stage_weights(checkpoint: Path, store_uri: str) -> str:
    """Upload a YOLO checkpoint to <store>/weights/<file name>, where runs on that store find it by default
    (clusters without internet); refuses a file that is not one. Returns the object's URI."""
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint} does not exist")
    if checkpoint.suffix != ".pt":
        raise UserError(f"{checkpoint}: name it <model>.pt (e.g. yolo11s.pt); runs look for weights/<model>.pt")
    offline_ultralytics()  # a YOLO checkpoint holds ultralytics objects: unpickling it imports ultralytics
    import torch

    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as exc:  # a pickle, zip or torch error: all mean "not a checkpoint"
        raise UserError(f"{checkpoint} is not a YOLO checkpoint: torch cannot load it ({exc})") from exc
    if not isinstance(saved, dict) or saved.get("model") is None:
        raise UserError(f"{checkpoint} is not a YOLO checkpoint: it holds no 'model'")
    store = open_store(store_uri)
    key = layout.staged_weights(checkpoint.name)
    if not store.holds(checkpoint, store.head(key)):
        store.upload_file(checkpoint, key)
    return store.url(key)
