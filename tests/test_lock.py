"""requirements.lock: every install (make venv, CI, both images) takes exact versions from it, so it
must pin every package pyproject.toml asks for, at a version pyproject.toml admits."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def locked_versions() -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate((REPO / "requirements.lock").read_text().splitlines(), start=1):
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"requirements.lock:{number}: {line!r} is not an exact name==version pin"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"requirements.lock:{number}: {name} is pinned twice"
        pins[name] = match.group(2)
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    build = project["build-system"]["requires"]
    runtime = project["project"]["dependencies"]
    extras = [text for group in project["project"]["optional-dependencies"].values() for text in group]
    return [Requirement(text) for text in build + runtime + extras]


def test_the_lock_pins_every_requirement_at_an_admitted_version():
    pins = locked_versions()
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"pyproject.toml asks for {requirement} and requirements.lock does not pin it"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"requirements.lock pins {name}=={pins[name]}, which pyproject.toml's {requirement} refuses"
    for tool in ("pip", "setuptools", "torch", "torchvision"):
        assert tool in pins, f"requirements.lock does not pin {tool}"
