"""A local HTTP endpoint that speaks the KFP v2beta1 REST API for the CLI's contract tests.

Every request body is deserialized strictly into the `kfp_server_api` models (unknown fields,
wrong types and bad enum values answer 400, as the real API server's JSON decoding does), every
pipeline spec is parsed into the `PipelineSpec` proto, and answers are those models serialized
the way the server does. It keeps just enough state (pipelines, versions, experiments, runs,
recurring runs) to answer follow-up calls, and records each request for the tests to inspect.
"""

from __future__ import annotations

import datetime
import email.parser
import email.policy
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import kfp_server_api
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.kfp_backends import Backend
from backend_protos import rejections_of

API = "/apis/v2beta1"

# int64 fields: the generated models type them as `str` (the OpenAPI spec's int64 format), and
# the server's protojson decoding takes either a JSON number or a decimal string for them.
INT64_FIELDS = {("V2beta1RecurringRun", "max_concurrency"), ("V2beta1PeriodicSchedule", "interval_second")}

# Query parameters each upload endpoint declares; anything else is a client bug.
UPLOAD_QUERY_PARAMS = {"name", "display_name", "description", "namespace", "tags"}
UPLOAD_VERSION_QUERY_PARAMS = {"name", "display_name", "pipelineid", "description", "tags"}


class ApiError(Exception):
    """An answer other than 200, carrying the HTTP status and the google.rpc.Status message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any = None


def _model_class(type_name: str) -> type:
    return getattr(kfp_server_api.models, type_name)


def decode(value: Any, type_name: str, where: str) -> Any:
    """Turn JSON `value` into the Python value of OpenAPI type `type_name`, or raise ApiError(400)."""
    if type_name == "object":
        return value
    if type_name.startswith("list["):
        if not isinstance(value, list):
            raise ApiError(400, f"{where}: expected a list, got {type(value).__name__}")
        return [decode(item, type_name[5:-1], f"{where}[{i}]") for i, item in enumerate(value)]
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            raise ApiError(400, f"{where}: expected an object, got {type(value).__name__}")
        value_type = re.match(r"dict\(str, (.*)\)", type_name).group(1)
        return {key: decode(item, value_type, f"{where}.{key}") for key, item in value.items()}
    primitives = {"str": str, "bool": bool, "int": int, "float": (int, float), "datetime": str}
    if type_name in primitives:
        wrong_bool = isinstance(value, bool) and type_name in ("int", "float")
        if not isinstance(value, primitives[type_name]) or wrong_bool:
            raise ApiError(400, f"{where}: expected {type_name}, got {json.dumps(value)}")
        return value
    return decode_model(value, _model_class(type_name), where)


def decode_model(data: Any, model: type, where: str = "body") -> Any:
    """Strictly build `model` from its JSON form: unknown keys, wrong types, bad enum values -> 400."""
    if getattr(model, "allowable_values", None):
        if data not in model.allowable_values:
            raise ApiError(400, f"{where}: {json.dumps(data)} is not one of {model.allowable_values}")
        return data
    if not isinstance(data, dict):
        raise ApiError(400, f"{where}: expected a {model.__name__} object, got {json.dumps(data)}")
    by_json_key = {json_key: attr for attr, json_key in model.attribute_map.items()}
    unknown = sorted(set(data) - set(by_json_key))
    if unknown:
        raise ApiError(400, f"{where}: unknown field(s) {unknown} for {model.__name__}")
    values = {}
    for json_key, value in data.items():
        attr = by_json_key[json_key]
        if value is None:
            continue
        if (model.__name__, attr) in INT64_FIELDS and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        values[attr] = decode(value, model.openapi_types[attr], f"{where}.{json_key}")
    config = kfp_server_api.Configuration()
    config.client_side_validation = True
    try:
        return model(**values, local_vars_configuration=config)
    except ValueError as exc:
        raise ApiError(400, f"{where}: {exc}") from exc


def check_pipeline_spec(spec: dict, where: str) -> pipeline_spec_pb2.PipelineSpec:
    """Parse a pipeline spec (bare, or wrapped with a platform spec) as the server does."""
    try:
        if "pipeline_spec" in spec:
            json_format.ParseDict(spec.get("platform_spec", {}), pipeline_spec_pb2.PlatformSpec())
            spec = spec["pipeline_spec"]
        parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    except (json_format.ParseError, TypeError, AttributeError) as exc:
        raise ApiError(400, f"{where}: not a pipeline spec: {exc}") from exc
    if not parsed.pipeline_info.name or not parsed.root.dag.tasks:
        raise ApiError(400, f"{where}: pipeline spec lacks pipelineInfo.name or root.dag.tasks")
    return parsed


ARGUMENT_KINDS = {"NUMBER_DOUBLE": (int, float), "NUMBER_INTEGER": (int, float), "STRING": (str,),
                  "BOOLEAN": (bool,), "LIST": (list,), "STRUCT": (dict,)}


def _check_arguments(spec: dict, arguments: dict[str, Any]) -> None:
    """A run's arguments against the pipeline's parameters, as every backend's API server checks them
    (v2_template.go, validation of the runtime config): a value of another JSON kind is a 400."""
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    for name, value in arguments.items():
        if name not in parameters:
            raise ApiError(400, f"parameter {name} is not a parameter of the pipeline")
        kind = parameters[name]["parameterType"]
        if not isinstance(value, ARGUMENT_KINDS[kind]) or (kind != "BOOLEAN" and isinstance(value, bool)):
            raise ApiError(400, f"input parameter {name} requires type {kind}, but got {json.dumps(value)}")


def _serialize(model: Any) -> Any:
    return kfp_server_api.ApiClient().sanitize_for_serialization(model)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _display_name_filter(query: dict[str, list[str]]) -> str | None:
    """The display name an EQUALS filter asks for (the only filter the CLI sends)."""
    if "filter" not in query:
        return None
    for predicate in json.loads(query["filter"][0]).get("predicates", []):
        if predicate.get("key") == "display_name":
            return predicate.get("stringValue", predicate.get("string_value"))
    return None


@dataclass
class KfpState:
    """What the endpoint remembers between requests; `multi_user` makes it answer as a multi-user KFP."""

    multi_user: bool = False
    pipelines: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, list[Any]] = field(default_factory=dict)
    experiments: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)
    recurring_runs: dict[str, Any] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    run_final_state: str = "SUCCEEDED"
    ids: Any = field(default_factory=lambda: itertools.count(1))

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self.ids)}"


class KfpApiStub:
    """Serve the KFP v2beta1 API on 127.0.0.1 from a background thread (use as a context manager)."""

    def __init__(self, multi_user: bool = False, tag_name: str = "2.17.0") -> None:
        """`tag_name` is the backend release healthz reports; uploads are parsed strictly against its protos."""
        self.state = KfpState(multi_user=multi_user)
        self.tag_name = tag_name
        self._lock = threading.Lock()
        self._routes: list[tuple[str, re.Pattern, Callable]] = [
            ("GET", re.compile(rf"{API}/healthz"), self._healthz),
            ("POST", re.compile(rf"{API}/pipelines/upload"), self._upload_pipeline),
            ("POST", re.compile(rf"{API}/pipelines/upload_version"), self._upload_version),
            ("GET", re.compile(rf"{API}/pipelines"), self._list_pipelines),
            ("GET", re.compile(rf"{API}/pipelines/(?P<pipeline_id>[^/]+)/versions"), self._list_versions),
            ("GET", re.compile(rf"{API}/pipelines/(?P<pipeline_id>[^/]+)/versions/(?P<version_id>[^/]+)"),
             self._get_version),
            ("GET", re.compile(rf"{API}/experiments"), self._list_experiments),
            ("GET", re.compile(rf"{API}/experiments/(?P<experiment_id>[^/]+)"), self._get_experiment),
            ("POST", re.compile(rf"{API}/experiments"), self._create_experiment),
            ("POST", re.compile(rf"{API}/runs"), self._create_run),
            ("GET", re.compile(rf"{API}/runs/(?P<run_id>[^/:]+)"), self._get_run),
            ("POST", re.compile(rf"{API}/recurringruns"), self._create_recurring_run),
            ("GET", re.compile(rf"{API}/recurringruns"), self._list_recurring_runs),
            ("POST", re.compile(rf"{API}/recurringruns/(?P<recurring_run_id>[^/:]+):disable"),
             self._disable_recurring_run),
            ("DELETE", re.compile(rf"{API}/recurringruns/(?P<recurring_run_id>[^/:]+)"),
             self._delete_recurring_run),
        ]
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> KfpApiStub:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.state.requests if r.method == method and r.path == API + path]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _dispatch(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    status, answer = stub._answer(self.command, url.path, parse_qs(url.query),
                                                  self.headers.get("Content-Type", ""), raw)
                except ApiError as exc:
                    status, answer = exc.status, {"error": str(exc), "code": exc.status, "message": str(exc)}
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _dispatch

            def log_message(self, *args: object) -> None:
                """Keep test output quiet."""

        return Handler

    def _answer(self, method: str, path: str, query: dict, content_type: str, raw: bytes) -> tuple[int, Any]:
        for route_method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                body = self._parse_body(content_type, raw)
                with self._lock:
                    self.state.requests.append(RecordedRequest(method, path, query, body))
                    return 200, handler(body=body, query=query, **match.groupdict())
        raise ApiError(404, f"no route for {method} {path}")

    @staticmethod
    def _parse_body(content_type: str, raw: bytes) -> Any:
        if content_type.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
            return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                    for part in message.iter_parts()}
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"body is not JSON: {exc}") from exc

    def _healthz(self, **_: Any) -> Any:
        # backend/src/apiserver/main.go: the healthz handler writes these three fields from its build
        return {"commit_sha": "0" * 40, "tag_name": self.tag_name, "multi_user": self.state.multi_user}

    def _namespace(self, query: dict, what: str) -> str:
        """The namespace a list request names; multi-user KFP refuses to list runs and experiments without one."""
        namespace = query.get("namespace", [""])[0]
        if self.state.multi_user and not namespace and what != "pipelines":
            raise ApiError(400, f"Invalid input error: In multi-user mode, listing {what} requires a namespace")
        return namespace

    def _uploaded_spec(self, body: Any, query: dict, allowed_params: set[str]) -> pipeline_spec_pb2.PipelineSpec:
        unknown = sorted(set(query) - allowed_params)
        if unknown:
            raise ApiError(400, f"unknown query parameter(s) {unknown}")
        if not isinstance(body, dict) or set(body) != {"uploadfile"}:
            raise ApiError(400, "expected a multipart form with exactly one part, 'uploadfile'")
        try:
            documents = list(yaml.safe_load_all(body["uploadfile"]))
        except yaml.YAMLError as exc:
            raise ApiError(400, f"uploadfile is not YAML: {exc}") from exc
        backend = Backend.parse(self.tag_name)
        errors = rejections_of(documents, backend) if backend else []
        if errors:
            raise ApiError(400, f"invalid v2 pipeline spec for KFP {self.tag_name}: {'; '.join(errors)}")
        if len(documents) > 1:
            return check_pipeline_spec({"pipeline_spec": documents[0], "platform_spec": documents[1]}, "uploadfile")
        return check_pipeline_spec(documents[0], "uploadfile")

    def _add_version(self, pipeline_id: str, name: str, description: str | None, spec: Any) -> Any:
        version = kfp_server_api.V2beta1PipelineVersion(
            pipeline_id=pipeline_id, pipeline_version_id=self.state.new_id("version"), display_name=name,
            name=name, description=description, created_at=_now(), pipeline_spec=json_format.MessageToDict(spec))
        self.state.versions.setdefault(pipeline_id, []).append(version)
        return version

    def _upload_pipeline(self, body: Any, query: dict, **_: Any) -> Any:
        spec = self._uploaded_spec(body, query, UPLOAD_QUERY_PARAMS)
        name = (query.get("display_name") or query.get("name") or [spec.pipeline_info.name])[0]
        namespace = query.get("namespace", [""])[0]
        if any(p.display_name == name and p.namespace == namespace for p in self.state.pipelines.values()):
            raise ApiError(409, f"pipeline {name!r} already exists in namespace {namespace!r}")
        description = query.get("description", [None])[0]
        pipeline = kfp_server_api.V2beta1Pipeline(
            pipeline_id=self.state.new_id("pipeline"), display_name=name, name=name, namespace=namespace,
            description=description, created_at=_now())
        self.state.pipelines[pipeline.pipeline_id] = pipeline
        self._add_version(pipeline.pipeline_id, name, description, spec)
        return _serialize(pipeline)

    def _upload_version(self, body: Any, query: dict, **_: Any) -> Any:
        spec = self._uploaded_spec(body, query, UPLOAD_VERSION_QUERY_PARAMS)
        pipeline_id = query.get("pipelineid", [""])[0]
        if pipeline_id not in self.state.pipelines:
            raise ApiError(404, f"pipeline {pipeline_id!r} not found")
        name = (query.get("display_name") or query.get("name") or [""])[0]
        if not name:
            raise ApiError(400, "a pipeline version needs a name")
        if any(v.display_name == name for v in self.state.versions[pipeline_id]):
            raise ApiError(409, f"version {name!r} already exists")
        return _serialize(self._add_version(pipeline_id, name, query.get("description", [None])[0], spec))

    def _list_pipelines(self, query: dict, **_: Any) -> Any:
        name, namespace = _display_name_filter(query), self._namespace(query, "pipelines")
        pipelines = [p for p in self.state.pipelines.values()
                     if (name is None or p.display_name == name) and p.namespace == namespace]
        return _serialize(kfp_server_api.V2beta1ListPipelinesResponse(pipelines=pipelines, total_size=len(pipelines)))

    def _pipeline_versions(self, pipeline_id: str) -> list[Any]:
        if pipeline_id not in self.state.pipelines:
            raise ApiError(404, f"pipeline {pipeline_id!r} not found")
        return self.state.versions[pipeline_id]

    def _list_versions(self, query: dict, pipeline_id: str, **_: Any) -> Any:
        newest_first = query.get("sort_by", [""])[0].replace(" ", "") == "created_atdesc"
        versions = sorted(self._pipeline_versions(pipeline_id), key=lambda v: v.created_at, reverse=newest_first)
        page = versions[:int(query.get("page_size", ["10"])[0])]
        return _serialize(kfp_server_api.V2beta1ListPipelineVersionsResponse(
            pipeline_versions=page, total_size=len(versions)))

    def _get_version(self, pipeline_id: str, version_id: str, **_: Any) -> Any:
        for version in self._pipeline_versions(pipeline_id):
            if version.pipeline_version_id == version_id:
                return _serialize(version)
        raise ApiError(404, f"pipeline version {version_id!r} not found")

    def _list_experiments(self, query: dict, **_: Any) -> Any:
        name, namespace = _display_name_filter(query), self._namespace(query, "experiments")
        experiments = [e for e in self.state.experiments.values()
                       if (name is None or e.display_name == name) and (e.namespace or "") == namespace]
        return _serialize(kfp_server_api.V2beta1ListExperimentsResponse(
            experiments=experiments, total_size=len(experiments)))

    def _get_experiment(self, experiment_id: str, **_: Any) -> Any:
        if experiment_id not in self.state.experiments:
            raise ApiError(404, f"experiment {experiment_id!r} not found")
        return _serialize(self.state.experiments[experiment_id])

    def _create_experiment(self, body: Any, **_: Any) -> Any:
        experiment = decode_model(body, kfp_server_api.V2beta1Experiment)
        if not experiment.display_name:
            raise ApiError(400, "an experiment needs a display_name")
        experiment.experiment_id = self.state.new_id("experiment")
        experiment.created_at = _now()
        experiment.storage_state = "AVAILABLE"
        self.state.experiments[experiment.experiment_id] = experiment
        return _serialize(experiment)

    def _check_run_source(self, run: Any) -> None:
        """A run names an existing experiment and exactly one source: a spec or an uploaded version; its
        arguments have the pipeline's parameter types."""
        if run.experiment_id not in self.state.experiments:
            raise ApiError(404, f"experiment {run.experiment_id!r} not found")
        reference = run.pipeline_version_reference
        if (run.pipeline_spec is None) == (reference is None):
            raise ApiError(400, "give exactly one of pipeline_spec and pipeline_version_reference")
        if run.pipeline_spec is not None:
            spec = json_format.MessageToDict(check_pipeline_spec(run.pipeline_spec, "pipeline_spec"))
        elif reference.pipeline_version_id or isinstance(run, kfp_server_api.V2beta1Run):
            spec = self._get_version(reference.pipeline_id, reference.pipeline_version_id)["pipeline_spec"]
        elif not self._pipeline_versions(reference.pipeline_id):  # a recurring run follows the newest version
            raise ApiError(400, f"pipeline {reference.pipeline_id!r} has no versions")
        else:
            spec = max(self._pipeline_versions(reference.pipeline_id), key=lambda v: v.created_at).pipeline_spec
        _check_arguments(spec, (run.runtime_config.parameters if run.runtime_config else None) or {})

    def _create_run(self, body: Any, **_: Any) -> Any:
        run = decode_model(body, kfp_server_api.V2beta1Run)
        self._check_run_source(run)
        run.run_id = self.state.new_id("run")
        run.state = "PENDING"
        run.created_at = _now()
        self.state.runs[run.run_id] = run
        return _serialize(run)

    def _get_run(self, run_id: str, **_: Any) -> Any:
        if run_id not in self.state.runs:
            raise ApiError(404, f"run {run_id!r} not found")
        run = self.state.runs[run_id]
        run.state = self.state.run_final_state
        return _serialize(run)

    def _create_recurring_run(self, body: Any, **_: Any) -> Any:
        recurring_run = decode_model(body, kfp_server_api.V2beta1RecurringRun)
        self._check_run_source(recurring_run)
        trigger = recurring_run.trigger
        if trigger is None or (trigger.cron_schedule is None) == (trigger.periodic_schedule is None):
            raise ApiError(400, "a recurring run needs exactly one of trigger.cron_schedule and periodic_schedule")
        if trigger.cron_schedule is not None and len(trigger.cron_schedule.cron.split()) != 6:
            raise ApiError(400, f"cron {trigger.cron_schedule.cron!r} must have 6 fields (seconds first)")
        recurring_run.recurring_run_id = self.state.new_id("recurring")
        recurring_run.created_at = _now()
        recurring_run.status = "ENABLED" if recurring_run.mode == "ENABLE" else "DISABLED"
        self.state.recurring_runs[recurring_run.recurring_run_id] = recurring_run
        return _serialize(recurring_run)

    def _list_recurring_runs(self, query: dict, **_: Any) -> Any:
        name, namespace = _display_name_filter(query), self._namespace(query, "recurring runs")
        runs = [r for r in self.state.recurring_runs.values() if (name is None or r.display_name == name)
                and (self.state.experiments[r.experiment_id].namespace or "") == namespace]
        return _serialize(kfp_server_api.V2beta1ListRecurringRunsResponse(recurring_runs=runs, total_size=len(runs)))

    def _recurring_run(self, recurring_run_id: str) -> Any:
        if recurring_run_id not in self.state.recurring_runs:
            raise ApiError(404, f"recurring run {recurring_run_id!r} not found")
        return self.state.recurring_runs[recurring_run_id]

    def _disable_recurring_run(self, recurring_run_id: str, **_: Any) -> Any:
        recurring_run = self._recurring_run(recurring_run_id)
        recurring_run.mode, recurring_run.status = "DISABLE", "DISABLED"
        return {}

    def _delete_recurring_run(self, recurring_run_id: str, **_: Any) -> Any:
        self._recurring_run(recurring_run_id)
        del self.state.recurring_runs[recurring_run_id]
        return {}
