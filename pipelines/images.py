"""Container image names: one place, read by the pipeline compiler and by `make images`.

The tag is the project version plus a digest of what goes into the image (the flavour, the
Dockerfile and the sources it copies), so it changes whenever the code does: a node that
already holds an image by that name holds exactly this code, and the committed pipeline YAML
drifts (`pogona compile --check`) until it names the image of the current code.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from components.version import project_version

DEFAULT_REGISTRY = "ghcr.io/pogona-lab"
REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = "images/Dockerfile"
FLAVOURS = ("cpu", "cuda")
# What images/Dockerfile copies from the build context (tests/images checks the two agree), but
# images/build-ca: certificates a builder's network needs, read by the build stage alone.
IMAGE_SOURCES = (
    "requirements.lock", "pyproject.toml", "README.md", "components", "pipelines", "images/fetch_weights.py")


def _hashed(relative: str) -> bool:
    """The compiled pipeline names the tag, so it cannot be part of it; caches are not copied (.dockerignore)."""
    return not (relative.startswith("pipelines/compiled/") or "__pycache__/" in relative or relative.endswith(".pyc"))


def _hashed_files(root: Path) -> list[Path]:
    files = []
    for source in IMAGE_SOURCES:
        path = root / source
        if not path.exists():  # a tag without it would name an image that is not this code
            raise FileNotFoundError(f"{path}: an image source is missing; image tags are computed in a "
                                    "source checkout (pipelines/images.py IMAGE_SOURCES)")
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [path for path in files if _hashed(path.relative_to(root).as_posix())]


def source_digest(flavour: str, root: Path = REPO) -> str:
    """sha256 over the flavour, the Dockerfile and the sources it copies (paths and contents)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"image flavour {flavour!r}: one of {', '.join(FLAVOURS)}")
    digest = hashlib.sha256(flavour.encode() + b"\0")
    for path in [root / DOCKERFILE, *_hashed_files(root)]:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def image_tag(flavour: str) -> str:
    """`<version>-<first 12 hex digits of the source digest>`, e.g. 0.1.0-3f2a9c81d0e4."""
    return f"{project_version()}-{source_digest(flavour)[:12]}"


def repository(flavour: str) -> str:
    """`<registry>/pogona-<flavour>` for flavour 'cpu' or 'cuda' (POGONA_IMAGE_REGISTRY overrides the registry)."""
    return f"{os.environ.get('POGONA_IMAGE_REGISTRY', DEFAULT_REGISTRY).rstrip('/')}/pogona-{flavour}"


def image_name(flavour: str) -> str:
    """The immutable name the pipeline compiles with: `<repository>:<version>-<source digest>`."""
    return f"{repository(flavour)}:{image_tag(flavour)}"


def cpu_image() -> str:
    return image_name("cpu")


def cuda_image() -> str:
    return image_name("cuda")


if __name__ == "__main__":
    import sys

    flavour = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    print(f"{image_name(flavour)} {repository(flavour)}:{project_version()}")
