"""The container images as a cluster runs them: pinned bases, small non-root final stages that
never reach for the network, and the names the pipeline compiles with being the ones built."""

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
FLAVOURS = ("cpu", "cuda")
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|[\w.+-]+-dev)\b")
OCI_LABELS = {f"org.opencontainers.image.{key}"
              for key in ("title", "description", "version", "revision", "source", "licenses")}


@dataclass
class Stage:
    base: str
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
            image = re.sub(r"\$\{(\w+)\}", lambda match: global_args[match.group(1)], arguments.split()[0])
            stages.append(Stage(base=image))
        elif stages:
            stages[-1].instructions.append((keyword, arguments))
        elif keyword == "ARG":
            name, _, default = arguments.partition("=")
            global_args[name] = default
    return stages


def dockerfile(flavour: str) -> Path:
    return REPO / "images" / flavour / "Dockerfile"


def final_env(flavour: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for arguments in parse_dockerfile(dockerfile(flavour))[-1].arguments("ENV")
                for pair in shlex.split(arguments))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_base_images_are_pinned_to_release_tags(flavour):
    for stage in parse_dockerfile(dockerfile(flavour)):
        name, _, tag = stage.base.rpartition(":")
        assert name and "/" not in tag, f"{flavour}: base {stage.base!r} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{flavour}: base {stage.base!r} is not a release"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_final_stage_only_copies_what_the_build_stage_installed(flavour):
    stages = parse_dockerfile(dockerfile(flavour))
    assert len(stages) >= 2, f"{flavour}: not a multi-stage build"
    final = stages[-1]
    copies = final.arguments("COPY")
    assert copies and all(copy.startswith("--from=") for copy in copies), \
        f"{flavour}: the final stage copies from the build context: {copies}"
    for run in final.arguments("RUN"):
        assert not COMPILERS.search(run), f"{flavour}: compiler or headers in the final stage: {run}"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_final_stage_runs_as_a_numeric_non_root_user(flavour):
    users = parse_dockerfile(dockerfile(flavour))[-1].arguments("USER")
    assert users, f"{flavour}: the final stage runs as root"
    uid = users[-1].split(":")[0]
    # Kubernetes can only verify runAsNonRoot against a numeric USER.
    assert uid.isdigit() and int(uid) != 0, f"{flavour}: USER {users[-1]!r}"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_final_stage_carries_the_oci_labels(flavour):
    labels = " ".join(parse_dockerfile(dockerfile(flavour))[-1].arguments("LABEL"))
    keys = set(re.findall(r"(org\.opencontainers\.image\.[\w.]+)=", labels))
    assert OCI_LABELS <= keys, f"{flavour}: missing {sorted(OCI_LABELS - keys)}"
    assert 'org.opencontainers.image.title="pogona-' + flavour + '"' in labels


def final_env(flavour: str) -> dict[str, str]:
    """The final stage's ENV settings, unexpanded."""
    return dict(pair.split("=", 1) for arguments in parse_dockerfile(dockerfile(flavour))[-1].arguments("ENV")
                for pair in shlex.split(arguments))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_nothing_is_downloaded_when_a_pod_starts(flavour):
    env = final_env(flavour)
    assert env["YOLO_OFFLINE"] == "true"
    assert env["YOLO_CONFIG_DIR"].startswith(env["HOME"] + "/"), "the ultralytics config dir is not writable"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_images_bake_the_default_models_pretrained_weights_pinned_by_digest(flavour):
    build, final = parse_dockerfile(dockerfile(flavour))[0], parse_dockerfile(dockerfile(flavour))[-1]
    default = dict(shlex.split(arguments)[0].partition("=")[::2] for arguments in build.arguments("ARG"))
    url, fragment = urldefrag(default["BASE_WEIGHTS_URL"])
    assert urlparse(url).netloc == "github.com" and url.startswith("https://github.com/ultralytics/assets/releases/")
    assert Path(urlparse(url).path).name == f"{TrainConfig.model}.pt", "not the default model's weights"
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", fragment), f"{flavour}: the weights are not pinned by sha256"
    weights_dir = final_env(flavour)[WEIGHTS_DIR_ENV]
    assert f"python /tmp/fetch_weights.py {weights_dir} ${{BASE_WEIGHTS_URL}}" in build.arguments("RUN")
    assert f"--from=build {weights_dir} {weights_dir}" in final.arguments("COPY")
    assert "--build-arg BASE_WEIGHTS_URL= (empty) builds without weights" in \
        re.sub(r"\s*\n#\s*", " ", dockerfile(flavour).read_text()), f"{flavour}: the opt-out is not documented"


def test_both_images_bake_the_same_weights():
    defaults = {flavour: [arguments for arguments in parse_dockerfile(dockerfile(flavour))[0].arguments("ARG")
                          if arguments.startswith("BASE_WEIGHTS_URL=")] for flavour in FLAVOURS}
    assert defaults["cpu"] == defaults["cuda"] and len(defaults["cpu"]) == 1


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


@pytest.mark.parametrize("extra, expected", [
    ([], None),  # the Dockerfiles' pinned default
    (["BASE_WEIGHTS_URL="], ""),  # opted out: no weights
    (["BASE_WEIGHTS_URL=https://example.org/w/yolo11m.pt"], "https://example.org/w/yolo11m.pt"),
])
def test_make_images_keeps_the_dockerfile_weights_unless_told_otherwise(extra, expected):
    env = {key: value for key, value in os.environ.items() if key != "BASE_WEIGHTS_URL"}
    result = subprocess.run(["make", "-n", "images-cpu", "CONTAINER_ENGINE=podman",
                             f"BIN={Path(sys.executable).parent}", *extra], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    build = next(line for line in result.stdout.replace("\\\n", " ").splitlines() if line.startswith("podman build"))
    words = shlex.split(build)
    passed = [words[index + 1].partition("=")[2] for index, word in enumerate(words)
              if word == "--build-arg" and words[index + 1].startswith("BASE_WEIGHTS_URL=")]
    assert passed == ([] if expected is None else [expected])


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_dataset_cache_is_the_folder_the_pipeline_mounts_and_the_user_may_write_it(flavour):
    assert final_env(flavour)["POGONA_CACHE_DIR"] == CACHE_MOUNT
    runs = parse_dockerfile(dockerfile(flavour))[-1].arguments("RUN")
    assert any("mkdir" in run and "chown -R 10001:0" in run and CACHE_MOUNT in run for run in runs), \
        f"{flavour}: {CACHE_MOUNT} is not created for the non-root user"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_published_runs_record_the_git_revision_the_image_was_built_from(flavour):
    final = parse_dockerfile(dockerfile(flavour))[-1]
    assert final_env(flavour)[GIT_REVISION_ENV] == "${REVISION}"
    declared = [i for i, (keyword, arguments) in enumerate(final.instructions)
                if keyword == "ARG" and arguments.partition("=")[0] == "REVISION"]
    used = [i for i, (keyword, arguments) in enumerate(final.instructions)
            if keyword == "ENV" and GIT_REVISION_ENV in arguments]
    assert declared and declared[0] < used[0], f"{flavour}: ARG REVISION is not declared in the stage that uses it"


LOCKED_TORCH = "$(grep -E '^(torch|torchvision)==' /src/requirements.lock)"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_images_install_every_package_at_its_locked_version(flavour):
    """pip, torch/torchvision and the project each under requirements.lock: no version an image picks itself."""
    build = parse_dockerfile(dockerfile(flavour))[0]
    assert "requirements.lock /src/" in build.arguments("COPY")
    installs = [run for run in build.arguments("RUN") if run.startswith("pip install")]
    assert installs[0].split()[-1] == "pip", f"{flavour}: pip is not upgraded to the locked version first"
    assert any(run.endswith(LOCKED_TORCH) for run in installs), f"{flavour}: torch is not the locked pair"
    assert any(run.endswith(" /src") and "--build-constraint /src/requirements.lock" in run for run in installs)
    for run in installs:
        assert "--constraint /src/requirements.lock" in run, f"{flavour}: unconstrained install: {run}"


def test_cpu_image_takes_torch_from_the_cpu_wheel_index():
    build = parse_dockerfile(dockerfile("cpu"))[0]
    torch_install = next(run for run in build.arguments("RUN") if run.endswith(LOCKED_TORCH))
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_install


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
    for flavour in FLAVOURS:
        for copy in parse_dockerfile(dockerfile(flavour))[0].arguments("COPY"):
            for source in copy.split()[:-1]:
                assert not ignored_by_dockerignore(source, patterns), \
                    f"{flavour}: COPY {source} is left out of the build context by .dockerignore"
                assert (REPO / source).exists(), f"{flavour}: COPY {source}: no such path"


def test_make_images_tags_what_the_pipeline_compiles_with(monkeypatch):
    registry = "registry.example:5000/vision"
    monkeypatch.setenv("POGONA_IMAGE_REGISTRY", registry)
    result = subprocess.run(["make", "-n", "images", "CONTAINER_ENGINE=podman"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    builds = [command for command in result.stdout.replace("\\\n", " ").splitlines()
              if command.strip().startswith("podman build")]
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
    built = {}
    for command in builds:
        words = shlex.split(command)
        flavour = Path(words[words.index("--file") + 1]).parent.name
        built[flavour] = {words[index + 1] for index, word in enumerate(words) if word == "--tag"}
        assert f"VERSION={images.image_tag(flavour)}" in words
        assert f"REVISION={revision}" in words
    expected = {"cpu": images.cpu_image(), "cuda": images.cuda_image()}
    assert expected["cpu"].startswith(registry + "/pogona-cpu:")
    assert built == {flavour: {name, f"{images.repository(flavour)}:{images.project_version()}"}
                     for flavour, name in expected.items()}


def test_every_source_an_image_copies_is_part_of_its_tag():
    for flavour in FLAVOURS:
        for copy in parse_dockerfile(dockerfile(flavour))[0].arguments("COPY"):
            for source in copy.split()[:-1]:
                assert source in images.IMAGE_SOURCES, f"{flavour}: COPY {source} does not change the image tag"


def test_the_image_tag_changes_with_the_code_and_only_with_it(tmp_path):
    for source in ("requirements.lock", "pyproject.toml", "README.md", "images/fetch_weights.py",
                   "images/cpu/Dockerfile", "components/training/train.py", "pipelines/pipeline.py"):
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
    assert images.source_digest("cpu") != images.source_digest("cuda")  # each image its own Dockerfile
    (tmp_path / "requirements.lock").unlink()
    with pytest.raises(FileNotFoundError, match="requirements.lock: an image source is missing"):
        images.source_digest("cpu", tmp_path)


@pytest.mark.parametrize("script", sorted((REPO / "scripts").glob("*.sh")), ids=lambda path: path.name)
def test_shell_scripts_parse_and_are_executable(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
