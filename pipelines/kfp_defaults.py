"""Names the KFP commands default to, apart from `pipelines.client` so that building the CLI's
parser does not import kfp."""

from pathlib import Path

DEFAULT_PIPELINE_NAME = "pogona-train"
DEFAULT_PACKAGE = Path(__file__).resolve().parent / "compiled" / f"{DEFAULT_PIPELINE_NAME}.yaml"
DEFAULT_EXPERIMENT = "pogona"
DEFAULT_TOKEN_ENV = "KFP_TOKEN"
HOST_ENV = "KF_PIPELINES_ENDPOINT"
UI_HOST_ENV = "KF_PIPELINES_UI_ENDPOINT"
