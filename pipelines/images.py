"""Container image names: one place, read by the pipeline compiler and by `make images`.

The compiled pipeline pins the project version tag (so the committed YAML only changes when
the version does); `make images` also tags each image with the git revision.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

DEFAULT_REGISTRY = "ghcr.io/pogona-lab"


def project_version() -> str:
    try:
        return version("pogona")
    except PackageNotFoundError:
        return "0.0.0"


def image_name(flavour: str, registry: str | None = None) -> str:
    """`<registry>/pogona-<flavour>:<version>` for flavour 'cpu' or 'cuda'."""
    registry = registry or os.environ.get("POGONA_IMAGE_REGISTRY", DEFAULT_REGISTRY)
    return f"{registry.rstrip('/')}/pogona-{flavour}:{project_version()}"


def cpu_image() -> str:
    return image_name("cpu")


def cuda_image() -> str:
    return image_name("cuda")


if __name__ == "__main__":
    import sys

    print(image_name(sys.argv[1] if len(sys.argv) > 1 else "cpu"))
