"""The kustomize builds a user applies: they build, match the Kubernetes schemas, and keep the
cluster rules (pinned images, sized and non-root containers, no credentials in the repo)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from kubernetes.utils import parse_quantity

from pipelines import images
from pipelines.compile import compile_pipeline
from pipelines.pipeline import GRACE_SECONDS_ENV, S3_CONFIG_KEYS, Placement

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
KUSTOMIZATIONS = sorted(path.parent.relative_to(MANIFESTS).as_posix()
                        for path in MANIFESTS.rglob("kustomization.yaml"))
# The kind node image's Kubernetes (manifests/kind/cluster.yaml).
KUBERNETES_VERSION = "1.33.0"
PLACEHOLDER = re.compile(r"^<[a-z0-9-]+>$")
TRAINING_GRACE = "kfp/training-grace"  # a key of KFP's own ConfigMap, not pogona's objects
COMPILED = REPO / "pipelines" / "compiled" / "pogona-train.yaml"
POD_TEMPLATE_PATHS = {"Deployment": ("spec", "template", "spec"), "Job": ("spec", "template", "spec"),
                      "Pod": ("spec",)}


def kustomize_build(directory: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: run `make tools` (installs Debian's kubernetes-client)")
    result = subprocess.run([kubectl, "kustomize", str(MANIFESTS / directory)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def builds() -> dict[str, list[dict]]:
    return {directory: kustomize_build(directory) for directory in KUSTOMIZATIONS}


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    specs = []
    for obj in objects:
        if obj["kind"] in POD_TEMPLATE_PATHS:
            spec = obj
            for key in POD_TEMPLATE_PATHS[obj["kind"]]:
                spec = spec[key]
            specs.append((f"{obj['kind']}/{obj['metadata']['name']}", spec))
    return specs


def containers(objects: list[dict]) -> list[tuple[str, dict]]:
    return [(f"{owner} container {container['name']}", container)
            for owner, spec in pod_specs(objects)
            for container in spec.get("initContainers", []) + spec["containers"]]


def all_objects(builds: dict[str, list[dict]]) -> list[tuple[str, dict]]:
    return [(directory, obj) for directory, objects in builds.items() for obj in objects]


def test_every_layer_is_a_kustomization():
    assert set(KUSTOMIZATIONS) == {"base", "base/pipeline-runs", "overlays/kind", "overlays/gpu", TRAINING_GRACE}


def test_builds_match_the_kubernetes_schemas_strictly(builds):
    for directory, obj in all_objects(builds):
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{directory}: {obj['kind']}/{obj['metadata']['name']}: {error.message}")


def test_every_image_is_pinned_to_a_release_tag(builds):
    cluster = yaml.safe_load((MANIFESTS / "kind" / "cluster.yaml").read_text())
    references = [(f"{directory} {owner}", container["image"])
                  for directory, objects in builds.items() for owner, container in containers(objects)]
    references += [(f"kind node {node['role']}", node["image"]) for node in cluster["nodes"]]
    assert references
    for owner, image in references:
        name = image.split("@")[0]
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{owner}: image {image!r} is not pinned to a tag"


def test_every_container_has_cpu_and_memory_requests_and_limits(builds):
    for directory, objects in builds.items():
        for owner, container in containers(objects):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(resources.get(bound, {}))
                assert not missing, f"{directory} {owner}: no {bound} for {sorted(missing)}"


def test_every_pod_runs_as_non_root(builds):
    for directory, objects in builds.items():
        for owner, spec in pod_specs(objects):
            pod_level = spec.get("securityContext", {}).get("runAsNonRoot") is True
            for container in spec.get("initContainers", []) + spec["containers"]:
                container_level = container.get("securityContext", {}).get("runAsNonRoot") is True
                assert pod_level or container_level, \
                    f"{directory} {owner}: container {container['name']} may run as root"


def test_applying_a_build_never_writes_credentials(builds):
    for directory, obj in all_objects(builds):
        assert obj["kind"] != "Secret", \
            f"{directory} holds Secret/{obj['metadata']['name']}: applying it would overwrite real credentials"


def test_secret_manifests_hold_only_placeholders():
    secrets = [(path, doc) for path in sorted(MANIFESTS.rglob("*.yaml"))
               for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == "Secret"]
    assert secrets, "the S3 credentials template is missing"
    for path, secret in secrets:
        assert "data" not in secret, f"{path}: base64 data in a committed Secret"
        for key, value in secret.get("stringData", {}).items():
            assert PLACEHOLDER.match(str(value)), f"{path}: {key} is not a <placeholder>"
    template = next(secret for path, secret in secrets if secret["metadata"]["name"] == "pogona-s3")
    assert set(template["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_base_gives_pipeline_runs_an_identity_and_storage_and_nothing_unused(builds):
    base = builds["base"]
    assert find(base, "Namespace", "pogona")
    assert find(base, "ServiceAccount", "pogona-pipeline-runner")
    storage = find(base, "ConfigMap", "pogona-s3-endpoint")["data"]
    assert set(storage) == {"AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "POGONA_STORE"}
    # what the compiled pipeline maps from the ConfigMap, and nothing the pods would never see
    assert set(S3_CONFIG_KEYS) <= set(storage)
    assert {obj["kind"] for obj in base} == {"Namespace", "LimitRange", "ServiceAccount", "Role", "RoleBinding",
                                             "ConfigMap"}


@pytest.mark.parametrize("directory", [directory for directory in KUSTOMIZATIONS if directory != TRAINING_GRACE])
def test_role_binding_grants_the_runner_its_role_in_its_namespace(builds, directory):
    objects = builds[directory]
    account = find(objects, "ServiceAccount", "pogona-pipeline-runner")
    binding = find(objects, "RoleBinding", "pogona-pipeline-runner")
    role = find(objects, "Role", binding["roleRef"]["name"])
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pogona-pipeline-runner",
                                    "namespace": account["metadata"]["namespace"]}]
    assert role["metadata"]["namespace"] == account["metadata"]["namespace"]
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert not verbs & {"*", "delete", "deletecollection", "escalate", "bind", "impersonate"}
    assert all(rule.get("resourceNames") for rule in role["rules"] if "secrets" in rule["resources"]), \
        "the runner may read every Secret in the namespace"


def test_kind_overlay_lives_where_kfp_standalone_runs_pipelines(builds):
    kind = builds["overlays/kind"]
    assert not [obj for obj in kind if obj["kind"] in {"Namespace", "LimitRange"}], \
        "the kubeflow namespace and its pod defaults belong to the KFP install"
    assert {obj["metadata"]["namespace"] for obj in kind} == {"kubeflow"}


def test_kind_overlay_points_the_pipeline_at_its_minio_bucket(builds):
    kind = builds["overlays/kind"]
    storage = find(kind, "ConfigMap", "pogona-s3-endpoint")["data"]
    endpoint = urlparse(storage["AWS_ENDPOINT_URL_S3"])
    service = find(kind, "Service", endpoint.hostname)
    assert endpoint.port in {port["port"] for port in service["spec"]["ports"]}
    minio = find(kind, "Deployment", endpoint.hostname)
    assert service["spec"]["selector"].items() <= minio["spec"]["template"]["metadata"]["labels"].items()
    bucket_job = find(kind, "Job", "pogona-minio-bucket")["spec"]["template"]["spec"]["containers"][0]
    assert {"configMapRef": {"name": "pogona-s3-endpoint"}} in bucket_job["envFrom"]
    assert urlparse(storage["POGONA_STORE"]).scheme == "s3"


def test_kind_overlay_trains_on_cpu_and_uses_loaded_images(builds):
    kind = builds["overlays/kind"]
    assert "nvidia" not in yaml.safe_dump_all(kind), "the kind overlay asks for NVIDIA hardware"
    for owner, container in containers(kind):
        assert container.get("imagePullPolicy") == "IfNotPresent", owner


def test_gpu_overlay_checks_placement_on_nvidia_nodes_with_the_pipeline_image(builds, monkeypatch):
    monkeypatch.delenv("POGONA_IMAGE_REGISTRY", raising=False)
    job = find(builds["overlays/gpu"], "Job", "pogona-gpu-check")["spec"]["template"]["spec"]
    container = job["containers"][0]
    assert container["image"].rsplit(":", 1)[0] == images.repository("cuda")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert job["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in job["tolerations"]
    shm = next(mount for mount in container["volumeMounts"] if mount["mountPath"] == "/dev/shm")
    volume = next(volume for volume in job["volumes"] if volume["name"] == shm["name"])
    assert volume["emptyDir"]["medium"] == "Memory"


# What the KFP driver turns an executor's resources into (driver.go: resource* fields to requests/limits).
KFP_RESOURCE_FIELDS = {("requests", "cpu"): "resourceCpuRequest", ("limits", "cpu"): "resourceCpuLimit",
                       ("requests", "memory"): "resourceMemoryRequest", ("limits", "memory"): "resourceMemoryLimit"}


def admit(resources: dict[str, dict[str, str]], limit_range: dict) -> list[str]:
    """Why the API server rejects a container with these resources in a namespace with this LimitRange:
    API defaulting (request = limit when only a limit is set), then LimitRanger's defaults for what is
    still missing, then its min/max/ratio checks and pod validation's request <= limit."""
    requests, limits = dict(resources.get("requests", {})), dict(resources.get("limits", {}))
    for name, value in limits.items():
        requests.setdefault(name, value)
    problems = []
    for rule in (r for r in limit_range["spec"]["limits"] if r["type"] == "Container"):
        for name, value in rule.get("default", {}).items():
            limits.setdefault(name, value)
        for name, value in rule.get("defaultRequest", {}).items():
            requests.setdefault(name, value)
        for name, value in rule.get("min", {}).items():
            if name in requests and parse_quantity(requests[name]) < parse_quantity(value):
                problems.append(f"{name} request {requests[name]} is below the minimum {value}")
        for name, value in rule.get("max", {}).items():
            if name not in limits or parse_quantity(limits[name]) > parse_quantity(value):
                problems.append(f"{name} limit {limits.get(name, '(none)')} is above the maximum {value}")
        for name, value in rule.get("maxLimitRequestRatio", {}).items():
            if name in limits and parse_quantity(limits[name]) > parse_quantity(value) * parse_quantity(requests[name]):
                problems.append(f"{name} limit/request ratio exceeds {value}")
    problems += [f"{name} request {value} exceeds its limit {limits[name]}" for name, value in requests.items()
                 if name in limits and parse_quantity(value) > parse_quantity(limits[name])]
    return problems


@pytest.mark.parametrize("profile", ["gpu", "kind"])
def test_the_namespace_limit_range_admits_every_pipeline_step(builds, profile, tmp_path):
    limit_range = find(builds["base"], "LimitRange", "pogona-container-defaults")
    compiled = compile_pipeline(tmp_path / "pipeline.yaml", Placement.for_profile(profile))
    spec = next(yaml.safe_load_all(compiled.read_text()))
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 7
    for name, executor in executors.items():
        fields = executor["container"].get("resources", {})
        resources: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
        for (bound, resource), field in KFP_RESOURCE_FIELDS.items():
            if field in fields:
                resources[bound][resource] = fields[field]
        assert not admit(resources, limit_range), f"{profile} {name}: {admit(resources, limit_range)}"
    # KFP's own containers (driver, launcher init, Argo wait) set nothing: the defaults alone must fit
    assert not admit({}, limit_range)


def test_a_step_with_requests_above_the_default_limits_is_rejected(builds):
    limit_range = find(builds["base"], "LimitRange", "pogona-container-defaults")
    assert admit({"requests": {"cpu": "2", "memory": "8Gi"}}, limit_range) == [
        "cpu request 2 exceeds its limit 1", "memory request 8Gi exceeds its limit 1Gi"]


def test_kfp_pods_get_a_grace_period_that_fits_the_trainers_wait_for_its_checkpoints(builds):
    """The workflow defaults give every pipeline pod a longer grace period and a preStop hook through a pod spec
    patch that is a valid PodSpec; they keep KFP 2.17's own defaults; the compiled train task waits for its
    uploads less than that."""
    configmap = find(builds[TRAINING_GRACE], "ConfigMap", "workflow-controller-configmap")
    assert configmap["metadata"]["namespace"] == "kubeflow" and set(configmap["data"]) == {"workflowDefaults"}
    defaults = yaml.safe_load(configmap["data"]["workflowDefaults"])["spec"]
    patch = yaml.safe_load(defaults.pop("podSpecPatch"))
    grace = patch["terminationGracePeriodSeconds"]
    assert [container["name"] for container in patch["containers"]] == ["main"]  # KFP's component container
    assert patch["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]  # tests/pipelines/test_step_signals.py
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "patched"},
           "spec": {**patch, "containers": [{"image": "pogona:0", **patch["containers"][0]}]}}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    assert defaults == {"ttlStrategy": {"secondsAfterCompletion": 3600, "secondsAfterSuccess": 3600,
                                        "secondsAfterFailure": 3600},
                        "templateDefaults": {"retryStrategy": {"limit": "2", "retryPolicy": "OnError"}}}
    assert grace == Placement.termination_grace_s
    pipeline = next(yaml.safe_load_all(COMPILED.read_text()))
    train_env = pipeline["deploymentSpec"]["executors"]["exec-train-detector"]["container"]["env"]
    assert GRACE_SECONDS_ENV == "POGONA_GRACE_SECONDS"  # the trainer's name for it
    wait = float(next(item["value"] for item in train_env if item["name"] == GRACE_SECONDS_ENV))
    assert 30 <= wait <= grace - 10, "the trainer must stop waiting, log and exit before SIGKILL"
