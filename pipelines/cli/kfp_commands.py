"""`pogona upload`, `submit` and `schedule`: the compiled pipeline on a Kubeflow Pipelines server.

Authentication is kfp.Client's: a bearer token from an environment variable (--existing-token,
KFP_TOKEN by default), else a pod's projected service-account token (KF_PIPELINES_SA_TOKEN_PATH).
Tokens never go on the command line. kfp is imported only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from components.errors import UserError
from pipelines import kfp_defaults as defaults

if TYPE_CHECKING:
    from pipelines.client import Connection, PipelineSource

SCHEDULE_ACTIONS = ("create", "list", "disable", "delete")
SUCCESSFUL_STATES = {"SUCCEEDED", "SKIPPED"}


def _connection_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("KFP connection")
    group.add_argument("--host", help=f"KFP API URL, e.g. http://localhost:8080 (default: ${defaults.HOST_ENV})")
    group.add_argument("--namespace", help="Kubernetes namespace of a multi-user KFP install")
    group.add_argument("--existing-token", metavar="ENV_VAR", dest="token_env",
                       help=f"environment variable holding a bearer token (default: ${defaults.DEFAULT_TOKEN_ENV} if set)")
    return options


def _run_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--experiment", default=defaults.DEFAULT_EXPERIMENT,
                         help="experiment to file runs under, created when missing (default: %(default)s)")
    options.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                         help="pipeline argument, typed by the pipeline's parameter (repeatable)")
    options.add_argument("--service-account", default="",
                         help="Kubernetes service account the run's pods use (e.g. pogona-pipeline-runner; "
                              "default: KFP's)")
    return options


def _connect(args: argparse.Namespace) -> Connection:
    from pipelines import client

    return client.connect(args.host, namespace=args.namespace, token_env=args.token_env)


def _say_backend(conn: Connection, what: str) -> None:
    """One line: the server's backend release and what goes to it."""
    print(f"KFP backend {conn.tag_name} at {conn.host}: {what}", file=sys.stderr)


def _upload(args: argparse.Namespace) -> int:
    import tempfile

    from pipelines import client

    conn = _connect(args)
    with tempfile.TemporaryDirectory() as work:
        if args.package is None:
            from pipelines.compile import compile_pipeline
            from pipelines.pipeline import Placement

            backend = client.server_backend(conn)
            package = compile_pipeline(Path(work) / defaults.DEFAULT_PACKAGE.name, Placement.for_profile("gpu"),
                                       backend)
            _say_backend(conn, f"uploading the pipeline compiled for {backend}: {backend.features()}")
        else:
            package = args.package
            _say_backend(conn, f"uploading {package} as it is (it loads on {client.check_accepts(conn, package)} "
                               "and newer)")
        uploaded = client.upload(conn, package, args.name, args.version, args.description)
    print(f"{'created pipeline' if uploaded.created_pipeline else 'new version of'} {args.name} on {conn.host}",
          file=sys.stderr)
    print(f"pipeline id: {uploaded.pipeline_id}")
    print(f"version id: {uploaded.version_id}")
    print(f"version name: {uploaded.version_name}")
    return 0


def _submit_source(conn: Connection, args: argparse.Namespace) -> PipelineSource:
    from pipelines import client

    if args.package is not None:
        if args.version_id:
            raise UserError("--version-id picks a version of an uploaded pipeline; it does not go with --package")
        client.check_accepts(conn, args.package)
        return client.package_source(args.package)
    client.server_backend(conn)
    return client.uploaded_source(conn, args.pipeline_name or defaults.DEFAULT_PIPELINE_NAME, args.version_id)


def _submit(args: argparse.Namespace) -> int:
    from pipelines import client

    conn = _connect(args)
    source = _submit_source(conn, args)
    arguments = client.parse_params(args.param, source.parameter_types)
    _say_backend(conn, f"running {source.description}")
    label = args.package.stem if args.package else args.pipeline_name or defaults.DEFAULT_PIPELINE_NAME
    run_name = args.run_name or f"{label} {datetime.datetime.now():%Y-%m-%d %H:%M:%S}"
    run_id = client.submit_run(conn, source, args.experiment, run_name, arguments,
                               service_account=args.service_account)
    print(f"run id: {run_id}")
    print(f"run url: {client.ui_url(conn, f'runs/details/{run_id}')}")
    if not args.wait:
        return 0
    run = client.wait_for_run(conn, run_id, args.timeout)
    print(f"run state: {run.state}")
    if run.state in SUCCESSFUL_STATES:
        return 0
    reason = f": {run.error.message}" if run.error and run.error.message else ""
    print(f"pogona submit: run {run_id} ended {run.state}{reason}", file=sys.stderr)
    return 1


CRON_TIME_ZONE = ("in the time zone of KFP's scheduled-workflow controller: its CRON_SCHEDULE_TIMEZONE, "
                  "else its local time (UTC unless the deployment sets TZ)")


def _schedule_create(args: argparse.Namespace) -> int:
    from pipelines import client

    if not args.cron:
        raise UserError('schedule create needs --cron, e.g. --cron "0 0 2 * * *" (6 fields, seconds first)')
    cron = client.validate_schedule(args.cron, args.max_concurrency)
    conn = _connect(args)
    client.server_backend(conn)
    source = client.uploaded_source(conn, args.pipeline_name, args.version_id, follow_latest=True)
    arguments = client.parse_params(args.param, source.parameter_types)
    _say_backend(conn, f"scheduling {source.description}")
    schedule = client.apply_schedule(conn, source, args.experiment, args.job_name, cron, arguments,
                                     max_concurrency=args.max_concurrency, catchup=args.catchup,
                                     service_account=args.service_account)
    print(f"recurring run id: {schedule.recurring_run_id}")
    for replaced in schedule.replaced:
        print(f"replaced recurring run: {replaced}")
    print(f"runs: {source.description}, cron {cron} {CRON_TIME_ZONE}, max concurrency {args.max_concurrency}, "
          f"{'catchup' if args.catchup else 'no catchup'}")
    print(f"url: {client.ui_url(conn, f'recurringrun/details/{schedule.recurring_run_id}')}")
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from pipelines import client

    needs_id = args.action in ("disable", "delete")
    if needs_id != bool(args.job_id):
        raise UserError(f"schedule {args.action} {'needs a JOB_ID' if needs_id else 'takes no JOB_ID'}")
    if args.action == "create":
        return _schedule_create(args)
    conn = _connect(args)
    if args.action == "list":
        for job in client.list_schedules(conn):
            cron = job.trigger.cron_schedule.cron if job.trigger and job.trigger.cron_schedule else "-"
            print(f"{job.recurring_run_id}\t{job.mode}\t{cron}\t{job.display_name}")
    elif args.action == "disable":
        client.disable_schedule(conn, args.job_id)
        print(f"disabled recurring run {args.job_id}")
    else:
        client.delete_schedule(conn, args.job_id)
        print(f"deleted recurring run {args.job_id}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `upload`, `submit` and `schedule` to the `pogona` parser."""
    connection, run = _connection_options(), _run_options()

    upload = subparsers.add_parser("upload", parents=[connection], help="upload the compiled pipeline to KFP",
                                   description="Upload the compiled pipeline as a new pipeline, or as a new "
                                               "version when a pipeline of that name exists.")
    upload.add_argument("--package", type=Path,
                        help="compiled pipeline YAML to upload as it is (default: the pipeline compiled for the "
                             "server's KFP backend version, read from its healthz)")
    upload.add_argument("--name", default=defaults.DEFAULT_PIPELINE_NAME, help="pipeline name (default: %(default)s)")
    upload.add_argument("--version", help="name of the new version when the pipeline exists (default: project "
                                          "version, UTC time and git revision); a new pipeline's first version "
                                          "takes the pipeline's name")
    upload.add_argument("--description")
    upload.set_defaults(handler=_upload)

    submit = subparsers.add_parser("submit", parents=[connection, run], help="start a KFP run",
                                   description="Start a run of the newest (or given) version of an uploaded "
                                               "pipeline, or of a compiled package file.")
    source = submit.add_mutually_exclusive_group()
    source.add_argument("--pipeline-name", help=f"uploaded pipeline to run (default: {defaults.DEFAULT_PIPELINE_NAME})")
    source.add_argument("--package", type=Path, help="compiled pipeline YAML to run without uploading")
    submit.add_argument("--version-id", help="pipeline version to run (default: the newest)")
    submit.add_argument("--run-name", help="run name (default: pipeline name and local time)")
    submit.add_argument("--wait", action="store_true", help="wait for the run; exit 1 unless it succeeds")
    submit.add_argument("--timeout", type=float, metavar="S", help="with --wait, give up after S seconds")
    submit.set_defaults(handler=_submit)

    schedule = subparsers.add_parser("schedule", parents=[connection, run], help="manage the nightly recurring run",
                                     description="Create or replace (the default action), list, disable or "
                                                 "delete recurring runs.")
    schedule.add_argument("action", nargs="?", choices=SCHEDULE_ACTIONS, default="create",
                          help="what to do (default: create)")
    schedule.add_argument("job_id", nargs="?", metavar="JOB_ID", help="recurring run id, for disable and delete")
    schedule.add_argument("--cron", help='6-field KFP cron, seconds first, e.g. "0 0 2 * * *" (02:00 daily), '
                                         + CRON_TIME_ZONE)
    schedule.add_argument("--pipeline-name", default=defaults.DEFAULT_PIPELINE_NAME,
                          help="uploaded pipeline whose newest version at each run runs (default: %(default)s)")
    schedule.add_argument("--version-id", help="run this pipeline version every time instead of the newest")
    schedule.add_argument("--job-name", default="pogona-nightly",
                          help="recurring run name; one of that name already there is replaced "
                               "(default: %(default)s)")
    schedule.add_argument("--max-concurrency", type=int, default=1, help="runs at once (default: %(default)s)")
    schedule.add_argument("--catchup", action=argparse.BooleanOptionalAction, default=False,
                          help="backfill runs missed while paused (default: no catchup)")
    schedule.set_defaults(handler=_schedule)
