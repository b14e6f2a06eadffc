"""Contract tests of `pogona upload`, `submit` and `schedule` against the KFP v2beta1 API models.

This is not a live KFP. The CLI talks over real HTTP to a local endpoint (`kfp_api_stub`) that
deserializes every request strictly into the `kfp-server-api` models and the PipelineSpec proto
(unknown fields, wrong types and bad enum values answer 400) and answers as KFP would. What it
proves: the CLI sends well-formed requests with the right content to the right endpoints, and
turns failures into one line. What it cannot prove: how a real KFP schedules or executes them.
"""

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import kfp_server_api
import pytest
import yaml
from kfp import compiler, dsl
from kfp_api_stub import KfpApiStub

from pipelines.cli import main
from pipelines.client import parameter_types, parse_params
from pipelines.compile import COMMITTED_PIPELINE, compile_pipeline
from pipelines.kfp_backends import NEWEST
from pipelines.pipeline import Placement

README = Path(__file__).resolve().parents[2] / "README.md"

NIGHTLY = "0 0 2 * * *"


# No `from __future__ import annotations` here: kfp reads the component's annotations as types.
@dsl.component(base_image="python:3.11-slim")
def _echo(epochs: int, lr0: float, use_cuda: bool, model: str, augment: dict) -> str:
    return f"{model} {epochs} {lr0} {use_cuda} {augment}"


@dsl.pipeline(name="pogona-train")
def _tiny_pipeline(epochs: int = 100, lr0: float = 0.001, use_cuda: bool = True, model: str = "yolo11s",
                   augment: dict = {"mosaic": 1.0}):
    _echo(epochs=epochs, lr0=lr0, use_cuda=use_cuda, model=model, augment=augment)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("package") / "pogona-train.yaml"
    compiler.Compiler().compile(_tiny_pipeline, str(path))
    return path


@pytest.fixture
def kfp_api(monkeypatch: pytest.MonkeyPatch) -> KfpApiStub:
    for variable in ("KFP_TOKEN", "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_SA_TOKEN_PATH"):
        monkeypatch.delenv(variable, raising=False)
    with KfpApiStub() as stub:
        yield stub


def pogona(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _fields(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def _upload(capsys: pytest.CaptureFixture, kfp_api: KfpApiStub, package: Path, *extra: str) -> dict[str, str]:
    code, out, err = pogona(capsys, "upload", "--host", kfp_api.url, "--package", str(package), *extra)
    assert code == 0, err
    return _fields(out)


def test_upload_creates_the_pipeline_then_adds_versions(capsys, kfp_api, package, monkeypatch):
    monkeypatch.setenv("POGONA_GIT_REVISION", "0123456789abcdef0123456789abcdef01234567")  # images carry no .git
    first = _upload(capsys, kfp_api, package, "--description", "pogona head detector")
    second = _upload(capsys, kfp_api, package, "--version", "nightly-2")
    third = _upload(capsys, kfp_api, package)

    [created] = kfp_api.requests_to("POST", "/pipelines/upload")
    assert created.query["name"] == ["pogona-train"]
    assert created.query["description"] == ["pogona head detector"]
    assert created.body["uploadfile"] == package.read_bytes()
    versions = kfp_api.requests_to("POST", "/pipelines/upload_version")
    assert [v.query["pipelineid"] for v in versions] == [[first["pipeline id"]]] * 2
    assert second["pipeline id"] == third["pipeline id"] == first["pipeline id"]
    assert second["version name"] == "nightly-2"
    assert third["version name"].startswith("0.1.0-") and third["version name"].endswith("-g0123456")
    assert len({first["version id"], second["version id"], third["version id"]}) == 3


def test_submit_runs_the_newest_version_with_typed_parameters(capsys, kfp_api, package):
    _upload(capsys, kfp_api, package)
    newest = _upload(capsys, kfp_api, package, "--version", "v2")

    code, out, err = pogona(capsys, "submit", "--host", kfp_api.url, "--run-name", "smoke", "--wait",
                            "--param", "epochs=5", "--param", "lr0=1e-2", "--param", "use_cuda=false",
                            "--param", "model=yolo11n", "--param", 'augment={"mosaic": 0}')

    assert code == 0, err
    [request] = kfp_api.requests_to("POST", "/runs")
    run = request.body
    assert run["display_name"] == "smoke"
    assert run["pipeline_version_reference"] == {"pipeline_id": newest["pipeline id"],
                                                 "pipeline_version_id": newest["version id"]}
    assert run["runtime_config"]["parameters"] == {"epochs": 5, "lr0": 0.01, "use_cuda": False,
                                                   "model": "yolo11n", "augment": {"mosaic": 0}}
    assert kfp_api.state.experiments[run["experiment_id"]].display_name == "pogona"
    fields = _fields(out)
    assert fields["run url"] == f"{kfp_api.url}/#/runs/details/{fields['run id']}"
    assert fields["run state"] == "SUCCEEDED"


def test_submit_can_pin_an_older_version(capsys, kfp_api, package):
    oldest = _upload(capsys, kfp_api, package)
    _upload(capsys, kfp_api, package, "--version", "v2")

    code, _, err = pogona(capsys, "submit", "--host", kfp_api.url, "--version-id", oldest["version id"],
                          "--service-account", "pogona-pipeline-runner")

    assert code == 0, err
    [request] = kfp_api.requests_to("POST", "/runs")
    assert request.body["pipeline_version_reference"]["pipeline_version_id"] == oldest["version id"]
    assert request.body["service_account"] == "pogona-pipeline-runner"


def test_submit_of_a_package_sends_its_spec_and_a_failed_run_exits_non_zero(capsys, kfp_api, package):
    kfp_api.state.run_final_state = "FAILED"

    code, out, err = pogona(capsys, "submit", "--host", kfp_api.url, "--package", str(package), "--wait",
                            "--experiment", "laptop")

    assert code == 1
    assert "FAILED" in err
    [request] = kfp_api.requests_to("POST", "/runs")
    assert request.body["pipeline_spec"]["pipelineInfo"]["name"] == "pogona-train"
    assert "pipeline_version_reference" not in request.body
    assert not kfp_api.requests_to("POST", "/pipelines/upload")


@pytest.mark.parametrize("param, complaint", [("epochs=many", "NUMBER_INTEGER"),
                                              ("use_cuda=maybe", "BOOLEAN"),
                                              ("epoch=5", "no such parameter")])
def test_a_bad_parameter_stops_the_submit_before_a_run_starts(capsys, kfp_api, package, param, complaint):
    code, _, err = pogona(capsys, "submit", "--host", kfp_api.url, "--package", str(package), "--param", param)

    assert code == 2
    assert complaint in err and len(err.splitlines()) == 1
    assert not kfp_api.requests_to("POST", "/runs")


def test_submit_of_a_pipeline_never_uploaded_says_to_upload_it(capsys, kfp_api):
    code, _, err = pogona(capsys, "submit", "--host", kfp_api.url, "--pipeline-name", "pogona-train")

    assert code == 2
    assert "pogona upload" in err and kfp_api.url in err


@pytest.mark.parametrize("action", [[], ["create"]], ids=["schedule", "schedule create"])
def test_schedule_creates_the_nightly_recurring_run(capsys, kfp_api, package, action):
    uploaded = _upload(capsys, kfp_api, package)

    code, out, err = pogona(capsys, "schedule", *action, "--host", kfp_api.url, "--cron", NIGHTLY,
                            "--param", "epochs=60")

    assert code == 0, err
    [request] = kfp_api.requests_to("POST", "/recurringruns")
    job = request.body
    assert job["trigger"] == {"cron_schedule": {"cron": NIGHTLY}}
    assert int(job["max_concurrency"]) == 1
    assert job["no_catchup"] is True
    assert job["mode"] == "ENABLE"
    assert job["display_name"] == "pogona-nightly"
    # only the pipeline: each run takes the newest version uploaded by then (backend >= 2.5)
    assert job["pipeline_version_reference"] == {"pipeline_id": uploaded["pipeline id"]}
    assert job["runtime_config"]["parameters"] == {"epochs": 60}
    assert _fields(out)["recurring run id"] in kfp_api.state.recurring_runs
    assert "CRON_SCHEDULE_TIMEZONE" in out


def test_schedule_create_again_replaces_the_nightly_run_instead_of_adding_one(capsys, kfp_api, package):
    uploaded = _upload(capsys, kfp_api, package)
    _, first, _ = pogona(capsys, "schedule", "--host", kfp_api.url, "--cron", NIGHTLY)
    pogona(capsys, "schedule", "--host", kfp_api.url, "--cron", NIGHTLY, "--job-name", "weekly")

    code, out, err = pogona(capsys, "schedule", "--host", kfp_api.url, "--cron", "0 0 3 * * *",
                            "--version-id", uploaded["version id"])

    assert code == 0, err
    nightly = [job for job in kfp_api.state.recurring_runs.values() if job.display_name == "pogona-nightly"]
    assert [job.recurring_run_id for job in nightly] == [_fields(out)["recurring run id"]]
    assert nightly[0].trigger.cron_schedule.cron == "0 0 3 * * *"
    assert nightly[0].pipeline_version_reference.pipeline_version_id == uploaded["version id"]
    assert _fields(out)["replaced recurring run"] == _fields(first)["recurring run id"]
    assert len(kfp_api.state.recurring_runs) == 2  # the schedule of another name stays


def test_multi_user_kfp_finds_the_namespaced_pipeline_on_every_lookup(capsys, package, monkeypatch):
    for variable in ("KFP_TOKEN", "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_SA_TOKEN_PATH"):
        monkeypatch.delenv(variable, raising=False)
    with KfpApiStub(multi_user=True) as kfp_api:
        namespaced = ("--host", kfp_api.url, "--namespace", "team-a")
        first = _fields(pogona(capsys, "upload", *namespaced, "--package", str(package))[1])
        code, out, err = pogona(capsys, "upload", *namespaced, "--package", str(package), "--version", "v2")
        assert code == 0, err
        assert _fields(out)["pipeline id"] == first["pipeline id"]  # a new version, not a second pipeline
        assert pogona(capsys, "submit", *namespaced)[0] == 0
        for _ in range(2):
            assert pogona(capsys, "schedule", *namespaced, "--cron", NIGHTLY)[0] == 0

        assert len(kfp_api.state.recurring_runs) == 1
        [experiment] = kfp_api.state.experiments.values()
        assert experiment.namespace == "team-a"
        lookups = kfp_api.requests_to("GET", "/pipelines") + kfp_api.requests_to("GET", "/recurringruns")
        assert len(lookups) >= 5 and all(request.query["namespace"] == ["team-a"] for request in lookups)


def test_schedule_with_catchup_and_more_concurrency(capsys, kfp_api, package):
    _upload(capsys, kfp_api, package)

    code, _, err = pogona(capsys, "schedule", "create", "--host", kfp_api.url, "--cron", "0 30 3 * * MON-FRI",
                          "--catchup", "--max-concurrency", "2", "--job-name", "weekdays",
                          "--service-account", "pogona-pipeline-runner")

    assert code == 0, err
    [request] = kfp_api.requests_to("POST", "/recurringruns")
    assert request.body["service_account"] == "pogona-pipeline-runner"
    assert request.body["no_catchup"] is False
    assert int(request.body["max_concurrency"]) == 2


def test_schedule_list_disable_delete_hit_their_endpoints(capsys, kfp_api, package):
    _upload(capsys, kfp_api, package)
    pogona(capsys, "schedule", "--host", kfp_api.url, "--cron", NIGHTLY)
    [job_id] = kfp_api.state.recurring_runs

    code, listed, _ = pogona(capsys, "schedule", "list", "--host", kfp_api.url)
    assert code == 0
    assert listed.split("\t")[:3] == [job_id, "ENABLE", NIGHTLY]

    assert pogona(capsys, "schedule", "disable", job_id, "--host", kfp_api.url)[0] == 0
    assert kfp_api.requests_to("POST", f"/recurringruns/{job_id}:disable")
    assert kfp_api.state.recurring_runs[job_id].mode == "DISABLE"

    assert pogona(capsys, "schedule", "--host", kfp_api.url, "delete", job_id)[0] == 0
    assert kfp_api.requests_to("DELETE", f"/recurringruns/{job_id}")
    assert kfp_api.state.recurring_runs == {}


@pytest.mark.parametrize("options, complaint", [(["--cron", "0 2 * * *"], '"0 0 2 * * *"'),
                                                (["--cron", "0 0 25 * * *"], "hour '25'"),
                                                (["--cron", "0 0 2 * * * *"], "7 fields"),
                                                (["--cron", "0 */0 2 * * *"], "minute '*/0'"),
                                                (["--cron", NIGHTLY, "--max-concurrency", "0"],
                                                 "--max-concurrency 0: must be at least 1")])
def test_a_bad_schedule_is_rejected_before_any_request(capsys, kfp_api, options, complaint):
    code, _, err = pogona(capsys, "schedule", "--host", kfp_api.url, *options)

    assert code == 2
    assert complaint in err and len(err.splitlines()) == 1
    assert kfp_api.state.requests == []


def test_an_unreachable_host_fails_within_seconds_in_one_line(capsys, kfp_api):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{sock.getsockname()[1]}"
    started = time.monotonic()

    code, _, err = pogona(capsys, "submit", "--host", host)

    assert time.monotonic() - started < 5
    assert code == 2
    assert len(err.splitlines()) == 1 and host in err


def test_an_api_error_is_one_line_naming_the_host(capsys, kfp_api):
    code, _, err = pogona(capsys, "schedule", "delete", "recurring-404", "--host", kfp_api.url)

    assert code == 2
    assert len(err.splitlines()) == 1
    assert kfp_api.url in err and "404" in err and "recurring-404" in err


def test_a_token_is_named_by_its_variable_never_given_on_the_command_line(capsys, kfp_api):
    code, _, err = pogona(capsys, "upload", "--host", kfp_api.url, "--existing-token", "eyJhbGciOi.secret.sig")

    assert code == 2
    assert "secret" not in err and "name of an environment variable" in err.lower()
    assert kfp_api.state.requests == []


def test_the_endpoint_rejects_requests_outside_the_api_models(kfp_api):
    def post(body: dict) -> int:
        request = urllib.request.Request(f"{kfp_api.url}/apis/v2beta1/recurringruns", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request):
                return 200
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post({"display_name": "x", "maxConcurrency": 1}) == 400
    assert post({"display_name": "x", "no_catchup": "yes"}) == 400
    assert post({"display_name": "x", "mode": "ON"}) == 400


@pytest.mark.parametrize("tag_name, compiled_for, deadline", [("2.5.0", "2.5", False), ("2.17.0", "2.17", True),
                                                            ("unknown", "2.5", False)])
def test_upload_sends_what_the_servers_backend_accepts_and_says_which(capsys, monkeypatch, tag_name, compiled_for,
                                                                       deadline):
    """The stub parses an upload strictly against the protos of the release its healthz reports."""
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    with KfpApiStub(tag_name=tag_name) as server:
        code, out, err = pogona(capsys, "upload", "--host", server.url)
        assert code == 0, err
        assert f"KFP backend {tag_name} at {server.url}: uploading the pipeline compiled for {compiled_for}: " \
               f"{'run deadline' if deadline else 'no run deadline (from 2.17)'}, S3 endpoint ConfigMap" in err
        (upload,) = server.requests_to("POST", "/pipelines/upload")
        _, platform = yaml.safe_load_all(upload.body["uploadfile"])
        assert ("pipelineConfig" in platform["platforms"]["kubernetes"]) == deadline


def test_an_old_server_refuses_nothing_it_cannot_load(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    newest = compile_pipeline(tmp_path / "p.yaml", Placement.for_profile("gpu"), NEWEST)
    with KfpApiStub(tag_name="2.5.0") as server:
        code, _, err = pogona(capsys, "upload", "--host", server.url, "--package", str(newest))
        assert code == 2 and "needs KFP backend 2.17 or newer" in err and "--kfp-version 2.5" in err
        code, _, err = pogona(capsys, "submit", "--host", server.url, "--package", str(newest))
        assert code == 2 and "needs KFP backend 2.17 or newer" in err
        assert not server.requests_to("POST", "/pipelines/upload")
    with KfpApiStub(tag_name="2.3.0") as server:
        code, _, err = pogona(capsys, "schedule", "--host", server.url, "--cron", "0 0 2 * * *")
        assert code == 2 and "older than 2.5" in err and "s3_secret_name" in err


def _readme_client_example(host: str) -> str:
    """The kfp.Client example under README's "Starting runs from your own code", aimed at `host`."""
    text = README.read_text()
    section = text[text.index("### Starting runs from your own code"):]
    code = section.split("```python\n", 1)[1].split("\n```", 1)[0]
    assert "https://kfp.example.org" in code
    return code.replace("https://kfp.example.org", host)


def test_the_readme_kfp_client_example_starts_a_run_with_the_pipelines_parameter_types(kfp_api, monkeypatch):
    monkeypatch.chdir(README.parent)
    exec(compile(_readme_client_example(kfp_api.url), "README.md", "exec"), {})
    [request] = kfp_api.requests_to("POST", "/runs")
    sent = request.body["runtime_config"]["parameters"]
    assert sent["num_gpus"] == "2" and sent["epochs"] == 80
    spec, _ = yaml.safe_load_all(COMMITTED_PIPELINE.read_text())
    assert parse_params([f"{name}={value}" for name, value in sent.items()], parameter_types(spec)) == sent


def test_a_python_int_for_a_string_parameter_is_refused_with_400(kfp_api, monkeypatch):
    monkeypatch.chdir(README.parent)
    example = _readme_client_example(kfp_api.url)
    with pytest.raises(kfp_server_api.ApiException) as refused:
        exec(compile(example.replace('"num_gpus": "2"', '"num_gpus": 2'), "README.md", "exec"), {})
    assert refused.value.status == 400 and "num_gpus requires type STRING" in refused.value.body
