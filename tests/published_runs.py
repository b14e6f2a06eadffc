"""A pogona working dir as the pipeline leaves it, for the tests that publish one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

FIXTURES = Path(__file__).parent / "components" / "fixtures"


def make_run(root: Path, map50: float, map50_95: float, fingerprint: str = "fp-1") -> Path:
    """A pogona working dir as the pipeline leaves it (weights, results, sanity, evaluation, report, manifest)."""
    train = root / "train"
    (train / "weights").mkdir(parents=True)
    (train / "weights" / "best.pt").write_bytes(f"best {root.name}".encode() * 1000)
    (train / "weights" / "last.pt").write_bytes(f"last {root.name}".encode() * 1000)
    for name in ("results.csv", "args.yaml"):
        shutil.copy(FIXTURES / "converged_early" / name, train / name)
    (root / "evaluation").mkdir()
    (root / "evaluation" / "evaluation.json").write_text(json.dumps({
        "overall": {"precision": 0.97, "recall": 0.96, "map50": map50, "map50_95": map50_95},
        "by_modality": {"thermal": {"map50": map50, "map50_95": map50_95}}}))
    (root / "evaluation" / "pr_curve.png").write_bytes(b"png")
    (root / "evaluation" / "evaluation-work").mkdir()  # scratch validation runs: not part of the run
    (root / "evaluation" / "evaluation-work" / "data.yaml").write_text("names: {0: pogona_head}\n")
    (root / "sanity" / "sanity-run" / "weights").mkdir(parents=True)
    (root / "sanity" / "verdict.json").write_text(json.dumps({"verdict": "healthy", "epochs": []}))
    (root / "sanity" / "sanity-run" / "weights" / "best.pt").write_bytes(b"sanity weights")
    (root / "report").mkdir()
    (root / "report" / "report.md").write_text("# report\n")
    (root / "manifest.json").write_text(json.dumps({"fingerprint": fingerprint, "source": "s3://lab/datasets/p"}))
    (root / "data" / "images").mkdir(parents=True)  # the synced dataset: never re-uploaded
    (root / "data" / "images" / "a.jpg").write_bytes(b"jpg")
    return root
