"""Which Kubeflow Pipelines backend a compiled pipeline is for, and what each version accepts.

A backend's API server and driver parse the pipeline strictly against their own protos: a field
they do not know rejects the whole pipeline. So features newer than the oldest supported backend
are compiled in only for a backend that has them (tests/pipelines/test_backend_compat.py measures
this against each release's protos). Apart from `pipelines.client` so that the CLI's parser does
not import kfp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from components.errors import UserError

BELOW_OLDEST = ("before 2.5 the S3 Secret named by the s3_secret_name parameter and the KFP run id "
                "(PIPELINE_JOB_ID_PLACEHOLDER) are not resolved, and before 2.4 num_gpus sets no GPU limit")


@dataclass(frozen=True, order=True)
class Backend:
    """A KFP backend release, major.minor (patch releases change no protos the pipeline uses)."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Backend | None:
        """`2.5`, `2.15.0`, `v2.17.0-rc.1` -> the release; None when `text` names no version."""
        match = re.match(r"v?(\d+)\.(\d+)", text.strip())
        return cls(int(match.group(1)), int(match.group(2))) if match else None

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def run_deadline(self) -> bool:
        """The whole run's activeDeadlineSeconds (PipelineConfig.active_deadline_seconds) from 2.17."""
        return self >= Backend(2, 17)

    @property
    def optional_config_map(self) -> bool:
        """A ConfigMap mapped to environment that may be missing (ConfigMapAsEnv.optional) from 2.15, which
        also knows SecretAsEnv.optional."""
        return self >= Backend(2, 15)

    def features(self) -> str:
        """What a pipeline compiled for this backend has beyond the oldest, in words."""
        deadline = "run deadline" if self.run_deadline else "no run deadline (from 2.17)"
        config_map = "optional" if self.optional_config_map else "required (optional from 2.15)"
        return f"{deadline}, S3 endpoint ConfigMap {config_map}"


OLDEST = Backend(2, 5)  # Kubeflow Platform 1.10.2; retry policies (Argo retryStrategy) need 2.5 too
NEWEST = Backend(2, 17)  # the newest release whose protos tests/pipelines/kfp_protos holds


def supported(version: str, where: str) -> Backend:
    """The backend `version` names, refused below the oldest supported; `where` names the flag or server."""
    backend = Backend.parse(version)
    if backend is None:
        raise UserError(f"{where}: {version!r} is not a KFP backend version such as {OLDEST}")
    if backend < OLDEST:
        raise UserError(f"{where}: KFP backend {version} is older than {OLDEST}, the oldest pogona runs on: "
                        f"{BELOW_OLDEST}")
    return min(backend, NEWEST)


def server_backend(tag_name: str, host: str) -> Backend:
    """The backend a server's healthz `tag_name` names; a build without a release tag ("unknown", "dev")
    gets what every supported backend accepts."""
    if Backend.parse(tag_name) is None:
        return OLDEST
    return supported(tag_name, f"KFP at {host}")


def package_needs(platform_spec: dict[str, Any]) -> Backend:
    """The oldest backend that accepts a compiled package, from its platform spec (the YAML's second document)."""
    kubernetes = platform_spec.get("platforms", {}).get("kubernetes", {})
    if "activeDeadlineSeconds" in kubernetes.get("pipelineConfig", {}):
        return Backend(2, 17)
    executors = kubernetes.get("deploymentSpec", {}).get("executors", {}).values()
    mappings = [mapping for executor in executors
                for mapping in executor.get("configMapAsEnv", []) + executor.get("secretAsEnv", [])]
    if any("optional" in mapping for mapping in mappings):
        return Backend(2, 15)
    return OLDEST
