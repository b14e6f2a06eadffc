"""Resolve `--weights` / `--model` to something `YOLO()` loads without touching the internet.

A bare name such as "yolo11s.pt" makes ultralytics download it from GitHub; cluster pods and
these machines have no egress. Base weights therefore come from object storage (or a local
file), and with no weights the model is built from its architecture YAML.
"""

from __future__ import annotations

from pathlib import Path

from components.config import cache_root
from components.errors import UserError
from components.storage import file_matches, split_uri


def default_cache_dir() -> Path:
    """Where downloaded base weights are kept between runs."""
    return cache_root() / "weights"


def resolve_weights(weights: str, model: str, cache_dir: Path) -> str:
    """What to pass to `YOLO()`: a local checkpoint path, or the model's YAML when no weights are given."""
    if not weights:
        return model if model.endswith((".yaml", ".yml")) else f"{Path(model).stem}.yaml"
    if "://" in weights:
        store, name = split_uri(weights)
        info = store.head(name)
        if info is None:
            raise UserError(f"base weights {weights} do not exist")
        local = cache_dir / store.url(name).split("://", 1)[1].lstrip("/")
        if not file_matches(local, info):
            store.download(name, local, expected=info)
        return str(local)
    path = Path(weights).expanduser()
    if path.is_file():
        return str(path)
    if path.suffix == ".pt" and path.parent == Path("."):
        raise UserError(f"{weights!r} is not a local file, and fetching it by name would download it from the "
                        f"internet; upload it to <store>/weights/{path.name} and pass "
                        f"--weights s3://<bucket>/weights/{path.name} (or a file path)")
    raise UserError(f"base weights {weights!r} not found (give s3://..., file:///... or an existing file)")
