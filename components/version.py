"""Which code is running: the project's version and git revision, as image tags and published runs name it."""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path

# The images set it from their build argument REVISION (images/*/Dockerfile): they carry no .git.
GIT_REVISION_ENV = "POGONA_GIT_REVISION"


def project_version() -> str:
    """The installed package's version; "unknown" where the project runs from a checkout never installed."""
    try:
        return metadata.version("pogona")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_revision() -> str | None:
    """The commit the code comes from: POGONA_GIT_REVISION, else `git rev-parse HEAD`, else None."""
    revision = os.environ.get(GIT_REVISION_ENV)
    if revision:
        return revision
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def code_version() -> dict[str, str | None]:
    """The package version and git revision, as published runs record them."""
    return {"package": project_version(), "git_revision": git_revision()}
