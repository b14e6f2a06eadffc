"""Strict loading of a compiled pipeline as a given KFP backend release loads it.

Each release's API server (`backend/src/apiserver/template/v2_template.go`) reads the pipeline
spec and the platform spec with Go's `protojson.Unmarshal`, and its driver reads each executor's
KubernetesExecutorConfig the same way: an unknown field rejects the pipeline. Python's
`json_format.ParseDict` without `ignore_unknown_fields` is as strict; it runs here against the
descriptors of that release's own protos (kfp_protos/, see its README).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from pipelines.kfp_backends import Backend

PROTOS = Path(__file__).resolve().parent / "kfp_protos"
RELEASES = tuple(sorted((Backend.parse(path.stem.removeprefix("backend-")) for path in PROTOS.glob("backend-*.binpb"))))


@functools.cache
def _message_classes(backend: Backend) -> dict[str, type]:
    (path,) = PROTOS.glob(f"backend-{backend}.*.binpb")
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file:
        pool.Add(file)
    names = ("ml_pipelines.PipelineSpec", "ml_pipelines.PlatformSpec", "kfp_kubernetes.KubernetesExecutorConfig")
    return {name.split(".")[1]: message_factory.GetMessageClass(pool.FindMessageTypeByName(name)) for name in names}


FREE_FORM = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}


def _unknown_fields(document: Any, message: Any) -> set[str]:
    """Every key of `document` that `message` (a descriptor) has no field for, anywhere below it, as
    `Type has no field named name`. A parser stops at the first; this lists them all."""
    if message.full_name in FREE_FORM or not isinstance(document, dict):
        return set()
    fields = {name: field for field in message.fields for name in (field.name, field.json_name)}
    unknown = set()
    for key, value in document.items():
        field = fields.get(key)
        if field is None:
            unknown.add(f"{message.name} has no field named {key}")
        elif field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                value_type = field.message_type.fields_by_name["value"].message_type
                items = value.values() if value_type is not None else []
            else:
                value_type, items = field.message_type, value if isinstance(value, list) else [value]
            for item in items:
                unknown |= _unknown_fields(item, value_type)
    return unknown


def _errors(document: Any, message: type) -> set[str]:
    """Why `message` refuses `document`: its unknown fields, else the strict parser's error."""
    unknown = _unknown_fields(document, message.DESCRIPTOR)
    if unknown:
        return unknown
    try:
        json_format.ParseDict(document, message())
    except json_format.ParseError as exc:
        return {str(exc).splitlines()[0]}
    return set()


def rejections(package: Path, backend: Backend) -> list[str]:
    """Why `backend` refuses the compiled `package`: distinct errors, sorted; empty when it accepts it."""
    return rejections_of(list(yaml.safe_load_all(package.read_text())), backend)


def rejections_of(documents: list[Any], backend: Backend) -> list[str]:
    """`rejections` of a compiled package's YAML documents: the pipeline spec, then any platform spec."""
    spec, platform = (documents + [{"platforms": {"kubernetes": {"deploymentSpec": {"executors": {}}}}}])[:2]
    classes = _message_classes(backend)
    errors = _errors(spec, classes["PipelineSpec"]) | _errors(platform, classes["PlatformSpec"])
    for config in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        errors |= _errors(config, classes["KubernetesExecutorConfig"])
    return sorted(errors)
