"""`pogona report`, `pogona publish`, `pogona export` as a user types them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.cli.reporting import default_export_dir

FIXTURES = Path(__file__).parent.parent / "components" / "fixtures"


def make_workdir(root: Path, map50: float, map50_95: float) -> Path:
    """A pogona working dir: train/ from a fixture run, plus weights, an evaluation and a manifest."""
    shutil.copytree(FIXTURES / "converged_early", root / "train")
    (root / "train" / "weights").mkdir()
    (root / "train" / "weights" / "best.pt").write_bytes(root.name.encode() * 100)
    (root / "evaluation").mkdir()
    (root / "evaluation" / "evaluation.json").write_text(json.dumps({
        "overall": {"precision": 0.97, "recall": 0.96, "map50": map50, "map50_95": map50_95},
        "by_modality": {"thermal": {"precision": 0.9, "recall": 0.9, "map50": 0.96, "map50_95": 0.61},
                        "visible": {"precision": 0.99, "recall": 0.99, "map50": 0.99, "map50_95": 0.88}}}))
    (root / "manifest.json").write_text(json.dumps({"fingerprint": "abc", "source": "file:///data"}))
    return root


def test_report_on_a_working_dir_finds_its_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    work = make_workdir(tmp_path / "work", 0.98, 0.83)
    assert main(["report", str(work)]) == 0
    out = capsys.readouterr().out
    assert "This run reaches mAP50 0.980 and mAP50-95 0.830" in out
    assert "Label more thermal images" in out
    markdown = (work / "report" / "report.md").read_text()
    assert "| thermal | 0.900 | 0.900 | 0.960 | 0.610 |" in markdown
    assert (work / "report" / "report.html").is_file()


def test_report_on_a_results_csv_with_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(FIXTURES / "dead_mps" / "results.csv"), "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.startswith("This run failed")
    assert (tmp_path / "r" / "report.md").is_file()


def test_publish_promotes_then_keeps_the_better_champion(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = str(tmp_path / "store")
    first = make_workdir(tmp_path / "first", 0.98, 0.83)
    assert main(["publish", "--run-dir", str(first), "--store", store, "--run-id", "first"]) == 0
    assert "promoted: no champion yet" in capsys.readouterr().out

    second = make_workdir(tmp_path / "second", 0.99, 0.90)
    assert main(["publish", "--run-dir", str(second), "--store", store, "--run-id", "second",
                 "--min-margin", "0.1"]) == 0
    assert "not promoted: mAP50-95 0.9000 vs champion first 0.8300" in capsys.readouterr().out
    assert main(["publish", "--run-dir", str(second), "--store", store, "--run-id", "third",
                 "--min-map50", "0.995"]) == 0
    assert "not promoted: mAP50 0.9900 is below the floor 0.9950" in capsys.readouterr().out
    pointer = json.loads((tmp_path / "store" / "models" / "pogona-head" / "production.json").read_text())
    assert pointer["run_id"] == "first"


@pytest.mark.parametrize("argv, message", [
    (["report", "/nonexistent/run"], "no results.csv there"),
    (["publish", "--run-dir", "/nonexistent/run", "--store", "/tmp/x", "--run-id", "r"], "no such directory"),
    (["export", "--weights", "/nonexistent/best.pt", "--data", "/tmp"], "no such file"),
    (["export", "--weights", "/nonexistent/best.pt", "--data", "/tmp", "--formats", "onnx,tflite"],
     "choose from onnx, int8, engine"),
])
def test_user_errors_are_one_line_and_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pogona {argv[0]}: error:") and message in err and err.count("\n") == 1


@pytest.mark.slow
def test_export_in_a_working_dir_lands_where_report_reads_it(trained_run: Path, demo_dataset_dir: Path,
                                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    work = tmp_path / "work"
    shutil.copytree(trained_run, work / "train")
    assert main(["export", "--weights", str(work / "train" / "weights" / "best.pt"), "--data", str(demo_dataset_dir),
                 "--formats", "onnx"]) == 0
    assert capsys.readouterr().out.endswith(f"wrote {work / 'exports' / 'exports.json'}\n")
    assert main(["report", str(work)]) == 0
    assert "| onnx | best.onnx |" in (work / "report" / "report.md").read_text()


@pytest.mark.parametrize("run_dir, exports", [("work/train", "work/exports"), ("runs/tiny", "runs/tiny/exports")])
def test_export_default_out(run_dir: str, exports: str) -> None:
    assert default_export_dir(Path(run_dir) / "weights" / "best.pt") == Path(exports)
