"""The container images as a cluster runs them, read from images/Dockerfile: a pinned base, a small
non-root final stage that never reaches for the network, and the names the pipeline compiles with
being the ones built. tests/images/containers runs the built images (make test-images)."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

from components.config import TrainConfig
from components.version import GIT_REVISION_ENV
from components.training.weights import WEIGHTS_DIR_ENV
from pipelines import images
from pipelines.pipeline import CACHE_MOUNT

REPO = Path(__file__).resolve().parents[2]
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|[\w.+-]+-dev)\b")
OCI_LABELS = {f"org.opencontainers.image.{key}"
              for key in ("title", "description", "version", "revision", "source", "licenses")}


@dataclass
class Stage:
    base: str
    name: str = ""
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == keyword]


def parse_dockerfile(path: Path) -> list[Stage]:
    """Stages with their instructions; `${ARG}` in FROM resolved from the global ARG defaults."""
    text = re.sub(r"\\\n", " ", path.read_text())
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            words = arguments.split()
            image = re.sub(r"\$\{(\w+)\}", lambda match: global_args[match.group(1)], words[0])
            stages.append(Stage(base=image, name=words[2] if len(words) == 3 and words[1].upper() == "AS" else ""))
        elif stages:
            stages[-1].instructions.append((keyword, arguments))
        elif keyword == "ARG":
            name, _, default = arguments.partition("=")
            global_args[name] = default
    return stages


DOCKERFILE = REPO / images.DOCKERFILE


def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE)


def stage(name: str) -> Stage:
    return next(stage for stage in stages() if stage.name == name)


def test_the_public_base_is_pinned_to_a_release_tag_and_a_digest():
    named = {stage.name for stage in stages()}
    external = [stage.base for stage in stages() if stage.base not in named]
    assert len(external) == 1, f"one base image, the stages build on it: {external}"
    reference, _, digest = external[0].partition("@")
    name, _, tag = reference.rpartition(":")
    assert name and "/" not in tag, f"base {external[0]!r} has no tag"
    assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"base {external[0]!r} is not a release"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"base {external[0]!r} is not pinned by digest"


def test_both_flavours_share_every_layer_before_the_torch_install():
    """The flavour is declared just before the torch install: the layers above it are the same for both."""
    build = stage("build")
    keywords = [keyword for keyword, _ in build.instructions]
    flavour_declared = build.instructions.index(("ARG", "FLAVOUR=cpu"))
    torch_install = next(i for i, (keyword, arguments) in enumerate(build.instructions)
                         if keyword == "RUN" and arguments.endswith(LOCKED_TORCH))
    assert keywords[flavour_declared:torch_install] == ["ARG", "ARG"]  # FLAVOUR, TORCH_INDEX_URL
    assert not any(stage.arguments("ARG") for stage in stages() if stage.name == "runtime")


def test_final_stage_only_copies_what_the_build_stage_installed():
    """Nor the build certificates (images/build-ca), nor the sources, nor pip's configuration reach it."""
    assert stages()[-1].base == "runtime" and stage("build").base == "runtime"
    for final in (stages()[-1], stage("runtime")):
        copies = final.arguments("COPY")
        assert all(copy.startswith("--from=build ") for copy in copies), \
            f"the final image copies from the build context: {copies}"
        for run in final.arguments("RUN"):
            assert not COMPILERS.search(run), f"compiler or headers in the final stage: {run}"
    assert stages()[-1].arguments("COPY")


def test_the_build_reads_no_pip_configuration_of_the_builder_and_keeps_no_cache():
    env = dict(pair.split("=", 1) for arguments in stage("build").arguments("ENV") for pair in shlex.split(arguments))
    assert env["PIP_CONFIG_FILE"] == "/dev/null" and env["PIP_NO_CACHE_DIR"] == "1"


def test_final_stage_runs_as_a_numeric_non_root_user():
    users = stages()[-1].arguments("USER")
    assert users, "the final stage runs as root"
    uid = users[-1].split(":")[0]
    # Kubernetes can only verify runAsNonRoot against a numeric USER.
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]!r}"


def test_final_stage_carries_the_oci_labels_of_its_flavour():
    labels = " ".join(stages()[-1].arguments("LABEL"))
    keys = set(re.findall(r"(org\.opencontainers\.image\.[\w.]+)=", labels))
    assert OCI_LABELS <= keys, f"missing {sorted(OCI_LABELS - keys)}"
    assert 'org.opencontainers.image.title="pogona-${FLAVOUR}"' in labels
    assert "FLAVOUR=cpu" in stages()[-1].arguments("ARG")


def final_env() -> dict[str, str]:
    """The ENV settings the final image ends with (the runtime stage's, then the final stage's), unexpanded."""
    return dict(pair.split("=", 1) for stage_ in (stage("runtime"), stages()[-1])
                for arguments in stage_.arguments("ENV") for pair in shlex.split(arguments))


def test_nothing_is_downloaded_when_a_pod_starts():
    env = final_env()
    assert env["YOLO_OFFLINE"] == "true"
    assert env["YOLO_CONFIG_DIR"].startswith(env["HOME"] + "/"), "the ultralytics config dir is not writable"


def test_images_bake_the_default_models_pretrained_weights_pinned_by_digest():
    build, final = stage("build"), stages()[-1]
    defaults = [arguments for arguments in build.arguments("ARG") if arguments.startswith("BASE_WEIGHTS_URL=")]
    assert len(defaults) == 1, "both flavours bake the same weights: one default"
    default = dict(shlex.split(arguments)[0].partition("=")[::2] for arguments in build.arguments("ARG"))
    url, fragment = urldefrag(default["BASE_WEIGHTS_URL"])
    assert urlparse(url).netloc == "github.com" and url.startswith("https://github.com/ultralytics/assets/releases/")
    assert Path(urlparse(url).path).name == f"{TrainConfig.model}.pt", "not the default model's weights"
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", fragment), "the weights are not pinned by sha256"
    weights_dir = final_env()[WEIGHTS_DIR_ENV]
    assert f"python /tmp/fetch_weights.py {weights_dir} ${{BASE_WEIGHTS_URL}}" in build.arguments("RUN")
    assert f"--from=build {weights_dir} {weights_dir}" in final.arguments("COPY")
    assert "--build-arg BASE_WEIGHTS_URL= (empty) builds without weights" in \
        re.sub(r"\s*\n#\s*", " ", DOCKERFILE.read_text()), "the opt-out is not documented"


def _fetch_weights(dest: Path, *urls: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "images" / "fetch_weights.py"), str(dest), *urls],
                          capture_output=True, text=True, timeout=60)


def test_fetch_weights_keeps_a_file_with_the_pinned_digest_and_fails_the_build_on_another(tmp_path):
    source = tmp_path / "yolo11s.pt"
    source.write_bytes(b"stand-in checkpoint bytes")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    result = _fetch_weights(tmp_path / "pinned", f"{source.as_uri()}#sha256={digest}")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pinned" / "yolo11s.pt").read_bytes() == source.read_bytes()
    changed = _fetch_weights(tmp_path / "changed", f"{source.as_uri()}#sha256={'0' * 64}")
    assert changed.returncode != 0 and f"has sha256 {digest}, expected {'0' * 64}" in changed.stderr
    assert list((tmp_path / "changed").iterdir()) == []  # neither the file nor a partial one is kept
    assert _fetch_weights(tmp_path / "unpinned", source.as_uri()).returncode == 0
    opted_out = _fetch_weights(tmp_path / "none")
    assert opted_out.returncode == 0 and list((tmp_path / "none").iterdir()) == []  # same layout, no weights


SOURCE_ARGS = ("BASE_IMAGE", "TORCH_INDEX_URL", "BASE_WEIGHTS_URL")


def build_command(flavour: str, tmp_path: Path, **env: str) -> tuple[list[str], str]:
    """scripts/build-image.sh with `echo` for the engine: the build command it would run, and what it said."""
    clean = {key: value for key, value in os.environ.items() if key not in (*SOURCE_ARGS, "PIP_CERT", "BUILD_CA_BUNDLE")}
    result = subprocess.run([str(REPO / "scripts" / "build-image.sh"), flavour, "registry.example/pogona:t"],
                            env={**clean, "CONTAINER_ENGINE": "echo", **env}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return shlex.split(result.stdout.splitlines()[-1]), result.stdout


def build_args(words: list[str], name: str) -> list[str]:
    return [words[index + 1].partition("=")[2] for index, word in enumerate(words)
            if word == "--build-arg" and words[index + 1].startswith(name + "=")]


@pytest.mark.parametrize("given, expected", [
    ({"BASE_WEIGHTS_URL": ""}, [""]),  # opted out: no weights
    ({"BASE_WEIGHTS_URL": "https://example.org/w/yolo11m.pt"}, ["https://example.org/w/yolo11m.pt"]),
    ({}, None),  # the Dockerfile's pinned default, where GitHub answers
])
def test_make_images_keeps_the_dockerfile_weights_unless_told_otherwise(given, expected, tmp_path):
    words, said = build_command("cpu", tmp_path, BASE_IMAGE="base:1", TORCH_INDEX_URL="", **given)
    if expected is None:  # unset: no argument, unless GitHub cannot be reached, which the build says
        expected = [""] if "github.com unreachable" in said else []
    assert build_args(words, "BASE_WEIGHTS_URL") == expected


def test_sources_given_are_passed_as_given_and_the_flavour_picks_the_torch(tmp_path):
    words, _ = build_command("cuda", tmp_path, BASE_IMAGE="mirror.example/python:3.11", TORCH_INDEX_URL="",
                             BASE_WEIGHTS_URL="")
    assert build_args(words, "BASE_IMAGE") == ["mirror.example/python:3.11"]
    assert build_args(words, "TORCH_INDEX_URL") == [""]  # empty: the flavour's default index
    assert build_args(words, "FLAVOUR") == ["cuda"]
    assert words[:4] == ["build", "--network", "host", "--file"] and words[-1] == "."


def test_the_build_trusts_the_ca_bundle_pip_trusts_here_and_only_in_the_build_context(tmp_path):
    bundle = tmp_path / "proxy.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nstand-in\n-----END CERTIFICATE-----\n")
    extra = REPO / "images" / "build-ca" / "extra.pem"
    kept = extra.read_bytes() if extra.exists() else None
    try:
        build_command("cpu", tmp_path, BASE_IMAGE="b:1", TORCH_INDEX_URL="", BASE_WEIGHTS_URL="", PIP_CERT=str(bundle))
        assert extra.read_text() == bundle.read_text()
        build_command("cpu", tmp_path, BASE_IMAGE="b:1", TORCH_INDEX_URL="", BASE_WEIGHTS_URL="", BUILD_CA_BUNDLE="")
        assert not extra.exists()  # none asked for: none left over from an earlier build
    finally:
        if kept is not None:
            extra.write_bytes(kept)
    copied = [copy for copy in stage("build").arguments("COPY") if copy.startswith("images/build-ca ")]
    assert copied, "the build stage does not read images/build-ca"
    assert (REPO / "images" / "build-ca" / ".gitignore").read_text().split() == ["*.pem"]  # never committed


def test_the_dataset_cache_is_the_folder_the_pipeline_mounts_and_the_user_may_write_it():
    assert final_env()["POGONA_CACHE_DIR"] == CACHE_MOUNT
    runs = stage("runtime").arguments("RUN")
    assert any("mkdir" in run and "chown -R 10001:0" in run and CACHE_MOUNT in run for run in runs), \
        f"{CACHE_MOUNT} is not created for the non-root user"


def test_published_runs_record_the_git_revision_the_image_was_built_from():
    final = stages()[-1]
    assert final_env()[GIT_REVISION_ENV] == "${REVISION}"
    declared = [i for i, (keyword, arguments) in enumerate(final.instructions)
                if keyword == "ARG" and arguments.partition("=")[0] == "REVISION"]
    used = [i for i, (keyword, arguments) in enumerate(final.instructions)
            if keyword == "ENV" and GIT_REVISION_ENV in arguments]
    assert declared and declared[0] < used[0], "ARG REVISION is not declared in the stage that uses it"


LOCKED_TORCH = "$(grep -E '^(torch|torchvision)==' /src/requirements.lock)"


def test_images_install_every_package_at_its_locked_version():
    """pip, torch/torchvision and the project each under requirements.lock: no version an image picks itself."""
    build = stage("build")
    assert "requirements.lock /src/" in build.arguments("COPY")
    installs = [run for run in build.arguments("RUN") if "pip install" in run]
    assert installs[0].split()[-1] == "pip", "pip is not upgraded to the locked version first"
    assert any(run.endswith(LOCKED_TORCH) for run in installs), "torch is not the locked pair"
    assert any(run.endswith(" /src") and "--build-constraint /src/requirements.lock" in run for run in installs)
    for run in installs:
        assert "--constraint /src/requirements.lock" in run, f"unconstrained install: {run}"


def test_torch_comes_from_the_flavours_public_index_unless_told_otherwise():
    torch_install = next(run for run in stage("build").arguments("RUN") if run.endswith(LOCKED_TORCH))
    assert "cpu) default_index=https://download.pytorch.org/whl/cpu ;;" in torch_install
    assert "cuda) default_index=https://pypi.org/simple ;;" in torch_install
    assert '--index-url "${TORCH_INDEX_URL:-$default_index}"' in torch_install


def ignored_by_dockerignore(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, and a pattern matching a parent matches the path."""
    parents = [str(Path(*Path(path).parts[:depth])) for depth in range(1, len(Path(path).parts) + 1)]
    ignored = False
    for pattern in patterns:
        include = pattern.startswith("!")
        if any(fnmatch.fnmatch(candidate, pattern.lstrip("!")) for candidate in parents):
            ignored = not include
    return ignored


def test_build_context_holds_the_copied_sources_and_not_the_venv():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert ignored_by_dockerignore(".venv/bin/python", patterns)
    for copy in stage("build").arguments("COPY"):
        for source in copy.split()[:-1]:
            assert not ignored_by_dockerignore(source, patterns), \
                f"COPY {source} is left out of the build context by .dockerignore"
            assert (REPO / source).exists(), f"COPY {source}: no such path"


def test_make_images_tags_what_the_pipeline_compiles_with(monkeypatch):
    registry = "registry.example:5000/vision"
    monkeypatch.setenv("POGONA_IMAGE_REGISTRY", registry)
    result = subprocess.run(["make", "-n", "images", "CONTAINER_ENGINE=podman", f"BIN={Path(sys.executable).parent}"],
                            cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    builds = [command for command in result.stdout.replace("\\\n", " ").splitlines()
              if "scripts/build-image.sh" in command]
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
    built = {}
    for command in builds:
        words = shlex.split(command)
        script = words.index("scripts/build-image.sh")
        flavour = words[script + 1]
        built[flavour] = set(words[script + 2:])
        assert "CONTAINER_ENGINE=podman" in words
        assert f"VERSION={images.image_tag(flavour)}" in words
        assert f"REVISION={revision}" in words
    expected = {"cpu": images.cpu_image(), "cuda": images.cuda_image()}
    assert expected["cpu"].startswith(registry + "/pogona-cpu:")
    assert built == {flavour: {name, f"{images.repository(flavour)}:{images.project_version()}"}
                     for flavour, name in expected.items()}


def test_every_source_an_image_copies_is_part_of_its_tag():
    """But the build certificates: the build stage alone reads them, and they differ between builders."""
    for copy in stage("build").arguments("COPY"):
        for source in copy.split()[:-1]:
            assert source in images.IMAGE_SOURCES or source == "images/build-ca", \
                f"COPY {source} does not change the image tag"


def test_the_image_tag_changes_with_the_code_and_only_with_it(tmp_path):
    for source in ("requirements.lock", "pyproject.toml", "README.md", "images/fetch_weights.py",
                   "images/Dockerfile", "components/training/train.py", "pipelines/pipeline.py"):
        (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / source).write_text(f"contents of {source}\n")
    (tmp_path / "pipelines" / "compiled").mkdir()
    first = images.source_digest("cpu", tmp_path)
    (tmp_path / "pipelines" / "compiled" / "pogona-train.yaml").write_text("image: pogona-cpu:0.1.0-...\n")
    (tmp_path / "components" / "__pycache__").mkdir()
    (tmp_path / "components" / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    assert images.source_digest("cpu", tmp_path) == first  # nothing the image holds changed
    (tmp_path / "components" / "train.py").write_text("EPOCHS = 80\n")
    assert images.source_digest("cpu", tmp_path) != first
    assert images.source_digest("cpu", tmp_path) != images.source_digest("cuda", tmp_path)  # one file, two images
    (tmp_path / "requirements.lock").unlink()
    with pytest.raises(FileNotFoundError, match="requirements.lock: an image source is missing"):
        images.source_digest("cpu", tmp_path)


@pytest.mark.parametrize("script", sorted((REPO / "scripts").glob("*.sh")), ids=lambda path: path.name)
def test_shell_scripts_parse_and_are_executable(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
