"""Talking to a Kubeflow Pipelines API server: upload the compiled pipeline, start runs, manage
the nightly recurring run.

Built on `kfp.Client`, so authentication is whatever it supports (an existing bearer token, the
projected service-account token in a pod, a namespace for multi-user installs). Every failure
to reach or satisfy the server becomes one `UserError` line that names the host.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import kfp
import kfp_server_api
import urllib3
import yaml
from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH
from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

from components.errors import UserError
from pipelines import kfp_backends
from pipelines.kfp_backends import Backend
from pipelines.kfp_defaults import DEFAULT_TOKEN_ENV, HOST_ENV, UI_HOST_ENV

PROBE_TIMEOUT_S = 10.0
FINISHED_STATES = {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"}


@dataclass(frozen=True)
class Connection:
    """A `kfp.Client` together with the host it talks to, for error messages and UI links."""

    host: str
    client: kfp.Client
    namespace: str | None = None
    tag_name: str = "unknown"  # the backend release the server's healthz reports


@dataclass(frozen=True)
class PipelineSource:
    """What a run executes: an uploaded pipeline version, or a compiled package sent inline."""

    parameter_types: dict[str, str]
    package: Path | None = None
    pipeline_id: str | None = None
    version_id: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Upload:
    pipeline_id: str
    version_id: str
    version_name: str
    created_pipeline: bool


def _reason(exc: Exception) -> str:
    """urllib3's error text without the connection object's repr."""
    return re.sub(r"^<[^>]*>: ", "", str(getattr(exc, "reason", None) or exc))


def _api_message(exc: kfp_server_api.ApiException) -> str:
    """The server's google.rpc.Status message, else the raw body, on one line."""
    try:
        body = json.loads(exc.body)
        text = body.get("message") or body.get("error") or exc.body
    except (TypeError, ValueError, AttributeError):
        text = exc.body or ""
    return " ".join(str(text).split())[:300]


@contextlib.contextmanager
def _calling(host: str) -> Iterator[None]:
    """Turn transport and API errors into one line naming the host; keep kfp's chatter off stdout."""
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    except kfp_server_api.ApiException as exc:
        raise UserError(f"KFP at {host} answered {exc.status} {exc.reason}: {_api_message(exc)}") from None
    except urllib3.exceptions.HTTPError as exc:
        raise UserError(f"cannot reach KFP at {host}: {_reason(exc)}") from None


def _existing_token(token_env: str | None) -> str | None:
    """The bearer token from the named environment variable (KFP_TOKEN when none is named)."""
    if token_env is None:
        return os.environ.get(DEFAULT_TOKEN_ENV) or None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token_env):
        raise UserError("--existing-token takes the NAME of an environment variable holding the token "
                        f"(e.g. {DEFAULT_TOKEN_ENV}), not the token itself")
    token = os.environ.get(token_env)
    if not token:
        raise UserError(f"--existing-token {token_env}: that environment variable is not set")
    return token


def _service_account_token_path() -> str | None:
    """The projected KFP service-account token of a pod, when there is one."""
    path = os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH
    return path if os.path.isfile(path) else None


def _probe(host: str, token: str | None) -> str:
    """Fail within seconds on an unreachable or wrong host, before kfp.Client's slow health retries; return
    the backend release the server reports (healthz `tag_name`, backend/src/apiserver/main.go)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = urllib3.Timeout(connect=PROBE_TIMEOUT_S, read=PROBE_TIMEOUT_S)
    with _calling(host):
        response = urllib3.PoolManager().request("GET", f"{host}/apis/v2beta1/healthz", headers=headers,
                                                 timeout=timeout, retries=False)
    if response.status != 200:
        raise UserError(f"KFP at {host} answered {response.status} to its health check; "
                        "is this the KFP API address, and are you authenticated?")
    try:
        return str(json.loads(response.data).get("tag_name") or "unknown")
    except (ValueError, AttributeError):
        return "unknown"


def connect(host: str | None, namespace: str | None = None, token_env: str | None = None) -> Connection:
    """Check that `host` answers as a KFP API server, then build an authenticated kfp.Client for it."""
    host = (host or os.environ.get(HOST_ENV) or "").rstrip("/")
    if not host:
        raise UserError(f"give --host (or set {HOST_ENV}), e.g. --host http://localhost:8080")
    if not host.startswith(("http://", "https://")):
        raise UserError(f"--host {host}: give the scheme too, e.g. http://{host}")
    token = _existing_token(token_env)
    token_path = None if token else _service_account_token_path()
    tag_name = _probe(host, token or (Path(token_path).read_text().strip() if token_path else None))
    credentials = ServiceAccountTokenVolumeCredentials(token_path) if token_path else None
    options = {"namespace": namespace} if namespace else {}
    with _calling(host):
        client = kfp.Client(host=host, existing_token=token, credentials=credentials, **options)
    return Connection(host=host, client=client, namespace=namespace, tag_name=tag_name)


def ui_url(conn: Connection, fragment: str) -> str:
    """A link into the KFP UI (KF_PIPELINES_UI_ENDPOINT when the UI lives elsewhere)."""
    return f"{os.environ.get(UI_HOST_ENV) or conn.host}/#/{fragment}"


def default_version_name(now: datetime.datetime | None = None) -> str:
    """`<project version>-<UTC time>[-g<git revision>]`: unique per upload and traceable to code."""
    from components.version import code_version

    version = code_version()
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%d-%H%M%S")
    name = f"{version['package']}-{stamp}"
    return f"{name}-g{version['git_revision'][:7]}" if version["git_revision"] else name


def _require_package(package: Path) -> Path:
    if not package.is_file():
        raise UserError(f"no compiled pipeline at {package}; run `pogona compile` first")
    return package


def parameter_types(pipeline_spec: Mapping[str, Any]) -> dict[str, str]:
    """The pipeline's input parameters and their KFP types (NUMBER_INTEGER, BOOLEAN, ...)."""
    spec = pipeline_spec.get("pipeline_spec", pipeline_spec)
    parameters = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: definition.get("parameterType", "") for name, definition in parameters.items()}


def package_parameter_types(package: Path) -> dict[str, str]:
    with _require_package(package).open() as stream:
        return parameter_types(next(yaml.safe_load_all(stream)) or {})


def _guess(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _coerce(name: str, text: str, kfp_type: str) -> Any:
    """`text` as the Python value of a KFP parameter type, or a UserError naming the parameter."""
    if kfp_type == "STRING":
        return text
    if kfp_type == "BOOLEAN":
        lowered = text.lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
    elif kfp_type == "NUMBER_INTEGER":
        with contextlib.suppress(ValueError):
            return int(text)
    elif kfp_type == "NUMBER_DOUBLE":
        with contextlib.suppress(ValueError):
            return float(text)
    elif kfp_type in ("LIST", "STRUCT"):
        value = _guess(text)
        if isinstance(value, list if kfp_type == "LIST" else dict):
            return value
    else:
        return _guess(text)
    raise UserError(f"--param {name}={text}: the pipeline expects {kfp_type}")


def parse_params(pairs: Sequence[str], types: Mapping[str, str]) -> dict[str, Any]:
    """`k=v` strings as pipeline arguments, typed by the pipeline's parameters (JSON guess if unknown)."""
    arguments = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UserError(f"--param {pair}: expected NAME=VALUE")
        if types and name not in types:
            raise UserError(f"--param {name}: the pipeline has no such parameter; it takes {', '.join(sorted(types))}")
        arguments[name] = _coerce(name, text, types.get(name, ""))
    return arguments


def _name_filter(name: str) -> str:
    """A v2beta1 list filter: display_name EQUALS `name`."""
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def find_pipeline_id(conn: Connection, name: str) -> str | None:
    """The pipeline named `name` in the connection's namespace (multi-user KFP), else among shared ones."""
    with _calling(conn.host):
        found = conn.client.list_pipelines(filter=_name_filter(name), page_size=2, namespace=conn.namespace)
    pipelines = found.pipelines or []
    if len(pipelines) > 1:
        raise UserError(f"KFP at {conn.host} holds {len(pipelines)} pipelines named {name!r}; give another name")
    return pipelines[0].pipeline_id if pipelines else None


def _newest_version(conn: Connection, pipeline_id: str) -> kfp_server_api.V2beta1PipelineVersion:
    with _calling(conn.host):
        versions = conn.client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
    if not versions.pipeline_versions:
        raise UserError(f"KFP at {conn.host}: pipeline {pipeline_id} has no versions")
    return versions.pipeline_versions[0]


def upload(conn: Connection, package: Path, pipeline_name: str, version_name: str | None = None,
           description: str | None = None) -> Upload:
    """Upload `package` as a new pipeline, or as a new version of the pipeline of that name."""
    _require_package(package)
    pipeline_id = find_pipeline_id(conn, pipeline_name)
    if pipeline_id is None:
        with _calling(conn.host):
            pipeline = conn.client.upload_pipeline(str(package), pipeline_name=pipeline_name,
                                                   description=description, namespace=conn.namespace)
        version = _newest_version(conn, pipeline.pipeline_id)
        return Upload(pipeline.pipeline_id, version.pipeline_version_id, version.display_name, True)
    with _calling(conn.host):
        version = conn.client.upload_pipeline_version(str(package), version_name or default_version_name(),
                                                      pipeline_id=pipeline_id, description=description)
    return Upload(pipeline_id, version.pipeline_version_id, version.display_name, False)


def uploaded_source(conn: Connection, pipeline_name: str, version_id: str | None = None,
                    follow_latest: bool = False) -> PipelineSource:
    """The given (or newest) version of the uploaded pipeline `pipeline_name`.

    With `follow_latest` and no version, the source names only the pipeline: a recurring run made
    from it runs whichever version is newest when it fires (KFP backend >= 2.5).
    """
    pipeline_id = find_pipeline_id(conn, pipeline_name)
    if pipeline_id is None:
        raise UserError(f"KFP at {conn.host} has no pipeline named {pipeline_name!r}; run `pogona upload` first")
    if version_id:
        with _calling(conn.host):
            version = conn.client.get_pipeline_version(pipeline_id, version_id)
    else:
        version = _newest_version(conn, pipeline_id)
    if follow_latest and not version_id:
        return PipelineSource(parameter_types=parameter_types(version.pipeline_spec or {}), pipeline_id=pipeline_id,
                              description=f"{pipeline_name}, newest version at each run (now {version.display_name})")
    return PipelineSource(parameter_types=parameter_types(version.pipeline_spec or {}), pipeline_id=pipeline_id,
                          version_id=version.pipeline_version_id,
                          description=f"{pipeline_name} version {version.display_name}")


def server_backend(conn: Connection) -> Backend:
    """The backend release `conn`'s server runs, refused below the oldest pogona supports."""
    return kfp_backends.server_backend(conn.tag_name, conn.host)


def package_backend(package: Path) -> Backend:
    """The oldest backend that accepts the compiled `package`."""
    documents = list(yaml.safe_load_all(_require_package(package).read_text()))
    return kfp_backends.package_needs(documents[1] if len(documents) > 1 else {})


def check_accepts(conn: Connection, package: Path) -> Backend:
    """The oldest backend that accepts `package`; refused, with the `--kfp-version` to compile it for, when
    the server's backend is older."""
    backend, needs = server_backend(conn), package_backend(package)
    if needs > backend:
        raise UserError(f"{package} needs KFP backend {needs} or newer and {conn.host} runs {conn.tag_name}: "
                        f"compile it with `pogona compile --kfp-version {backend} --output FILE`")
    return needs


def package_source(package: Path) -> PipelineSource:
    """A compiled package file, sent inline with the run."""
    return PipelineSource(parameter_types=package_parameter_types(package), package=package,
                          description=str(package))


def _source_arguments(source: PipelineSource) -> dict[str, Any]:
    if source.package is not None:
        return {"pipeline_package_path": str(source.package)}
    return {"pipeline_id": source.pipeline_id, "version_id": source.version_id}


def experiment_id(conn: Connection, name: str) -> str:
    """The id of the experiment `name`, created when missing."""
    with _calling(conn.host):
        return conn.client.create_experiment(name, namespace=conn.namespace).experiment_id


def submit_run(conn: Connection, source: PipelineSource, experiment: str, run_name: str,
               arguments: Mapping[str, Any], service_account: str = "") -> str:
    """Start one run of `source` in `experiment` (as `service_account`, else KFP's default); returns the run id."""
    experiment_key = experiment_id(conn, experiment)
    with _calling(conn.host):
        run = conn.client.run_pipeline(experiment_key, run_name, params=dict(arguments),
                                       service_account=service_account or None, **_source_arguments(source))
    return run.run_id


def wait_for_run(conn: Connection, run_id: str, timeout_s: float | None = None,
                 poll_s: float = 10.0) -> kfp_server_api.V2beta1Run:
    """Poll until the run finishes (succeeded, skipped, failed or canceled) or `timeout_s` passes."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        with _calling(conn.host):
            run = conn.client.get_run(run_id)
        if run.state in FINISHED_STATES:
            return run
        if deadline is not None and time.monotonic() >= deadline:
            raise UserError(f"run {run_id} is still {run.state} after {timeout_s:g} s; "
                            f"it keeps going: {ui_url(conn, f'runs/details/{run_id}')}")
        time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))


CRON_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23),
               ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))
CRON_NAMES = {
    "month": {m: i for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)},
    "day of week": {d: i for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))},
}
CRON_ITEM = re.compile(r"(?P<base>[*?]|(?P<first>\w+)(?:-(?P<last>\w+))?)(?:/(?P<step>\d+))?")


def _cron_value(text: str, field_name: str, low: int, high: int) -> int:
    value = CRON_NAMES.get(field_name, {}).get(text.upper())
    if value is None and text.isdigit():
        value = int(text)
    if value is None or not low <= value <= high:
        raise UserError(f"cron {field_name} {text!r} is out of range {low}-{high}")
    return value


def validate_cron(expression: str) -> str:
    """Check a KFP cron expression: 6 fields, seconds first (robfig/cron), each value in range."""
    fields = expression.split()
    if len(fields) == 5:
        raise UserError(f'cron "{expression}" has 5 fields, but KFP cron has 6 and starts with seconds; '
                        f'for that schedule use "0 {expression}"')
    if len(fields) != 6:
        raise UserError(f'cron "{expression}" has {len(fields)} fields; KFP cron has 6: '
                        'second minute hour day-of-month month day-of-week, e.g. "0 0 2 * * *"')
    for text, (field_name, low, high) in zip(fields, CRON_FIELDS):
        for item in text.split(","):
            match = CRON_ITEM.fullmatch(item)
            if not match or match["step"] == "0":
                raise UserError(f"cron {field_name} {item!r} is not a value, range, list or step")
            if match["first"]:
                first = _cron_value(match["first"], field_name, low, high)
                if match["last"] and _cron_value(match["last"], field_name, low, high) < first:
                    raise UserError(f"cron {field_name} range {item!r} runs backwards")
    return " ".join(fields)


def validate_schedule(cron: str, max_concurrency: int) -> str:
    """Check a schedule before any request: the cron (normalized, returned) and at least one run at once."""
    if max_concurrency < 1:
        raise UserError(f"--max-concurrency {max_concurrency}: must be at least 1")
    return validate_cron(cron)


@dataclass(frozen=True)
class Schedule:
    recurring_run_id: str
    replaced: list[str]


def apply_schedule(conn: Connection, source: PipelineSource, experiment: str, job_name: str, cron: str,
                   arguments: Mapping[str, Any], max_concurrency: int = 1, catchup: bool = False,
                   service_account: str = "") -> Schedule:
    """Make `job_name` the one enabled recurring run of that name (cron and max_concurrency as
    validate_schedule passed them): the v2beta1 API cannot update a recurring run, so any of that
    name are deleted once the new one exists."""
    existing = [job.recurring_run_id for job in list_schedules(conn, job_name)]
    body = kfp_server_api.V2beta1RecurringRun(
        experiment_id=experiment_id(conn, experiment), display_name=job_name, mode="ENABLE",
        pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
            pipeline_id=source.pipeline_id, pipeline_version_id=source.version_id),
        runtime_config=kfp_server_api.V2beta1RuntimeConfig(parameters=dict(arguments)),
        trigger=kfp_server_api.V2beta1Trigger(cron_schedule=kfp_server_api.V2beta1CronSchedule(cron=cron)),
        max_concurrency=max_concurrency, no_catchup=not catchup, service_account=service_account or None)
    with _calling(conn.host):
        # kfp.Client.create_recurring_run insists on a version id; the API takes a pipeline id alone
        recurring_run = conn.client._recurring_run_api.recurring_run_service_create_recurring_run(
            recurring_run=body)
    for recurring_run_id in existing:
        delete_schedule(conn, recurring_run_id)
    return Schedule(recurring_run.recurring_run_id, existing)


def list_schedules(conn: Connection, name: str | None = None) -> list[kfp_server_api.V2beta1RecurringRun]:
    """Every recurring run the caller can see in the connection's namespace (all pages), or those named `name`."""
    schedules, page_token = [], ""
    while True:
        with _calling(conn.host):
            page = conn.client.list_recurring_runs(page_token=page_token, page_size=100, namespace=conn.namespace,
                                                    filter=_name_filter(name) if name else None)
        schedules.extend(page.recurring_runs or [])
        page_token = page.next_page_token
        if not page_token:
            return [job for job in schedules if name is None or job.display_name == name]


def disable_schedule(conn: Connection, recurring_run_id: str) -> None:
    with _calling(conn.host):
        conn.client.disable_recurring_run(recurring_run_id)


def delete_schedule(conn: Connection, recurring_run_id: str) -> None:
    with _calling(conn.host):
        conn.client.delete_recurring_run(recurring_run_id)
