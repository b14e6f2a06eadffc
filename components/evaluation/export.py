"""Deployment exports: ONNX FP32, ONNX INT8 for CPU, and TensorRT on GPU nodes; each measured on val.

INT8 is ONNX Runtime static quantization (QDQ) calibrated on training images that go through
the same preprocessing ultralytics applies at validation (long side to imgsz, letterbox with
grey padding, BGR->RGB, /255, NCHW). Only Conv/MatMul/Gemm are quantized, and not the stem: the
convolution that reads the image stays float (Int8Recipe says why). Each model's mAP comes from
ultralytics' own validator on the .onnx file, and its latency from the same single-thread ONNX
Runtime settings for every model, so the numbers sit side by side in the report.

ultralytics exports on the torch device asked for (`device`); ONNX and INT8 models are always
scored by ONNX Runtime on the CPU, which is where they are deployed, and exports.json says so.
"""

from __future__ import annotations

import math
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from components.data.dataset import Dataset, load_dataset
from components.runtime.devices import check_single_device
from components.errors import UserError
from components.metrics.artifacts import ExportedModel, Exports
from components.runtime.yolo_env import offline_ultralytics

SUPPORTED_FORMATS = ("onnx", "int8", "engine")
CALIBRATION_IMAGES = 64
LATENCY_WARMUP_RUNS = 3
LATENCY_RUNS = 20
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]
ONNX_RUNTIME_DEVICE = "onnxruntime-cpu"  # where ONNX and INT8 models are validated and timed, whatever `device` is


@dataclass(frozen=True)
class Int8Recipe:
    """How the INT8 model is made: UINT8 activations, per-channel INT8 weights, MinMax calibration.

    `float_stem` keeps the convolution that reads the image in float. Its input is the image itself:
    many near-white pixels quantize to 255, and on x86 CPUs without VNNI (AVX2 only) ONNX Runtime
    multiplies UINT8 by INT8 with an instruction whose pairwise int16 sums saturate at 32767, so the
    stem's outputs clip. Quantizing everything lost 0.03-0.59 mAP50-95 there, depending only on the
    trained stem weights; keeping the stem float (a 3-channel convolution, a small share of the
    compute) brings INT8 within 0.01 (docs/benchmarks.md, bench/int8.py).
    """

    float_stem: bool = True


INT8 = Int8Recipe()
# ultralytics export arguments besides the device: FP32 ONNX, FP16 TensorRT
ULTRALYTICS_EXPORTS: dict[str, dict[str, Any]] = {
    "onnx": {"format": "onnx", "simplify": True, "dynamic": False},
    "engine": {"format": "engine", "half": True},
}


def split_images(dataset: Dataset, split: str, purpose: str) -> list[Path]:
    """The split's images; a split without any is a user error, since `purpose` needs them."""
    images = dataset.images(split)
    if not images:
        raise UserError(f"{dataset.splits[split]}: the {split} split has no images {purpose}")
    return images


def calibration_images(dataset: Dataset, limit: int = CALIBRATION_IMAGES) -> list[Path]:
    """Training images, evenly spread over the split, at most `limit`."""
    images = split_images(dataset, "train", "to calibrate INT8 on")
    step = max(1, len(images) // limit)
    return images[::step][:limit]


def preprocess(image_path: Path, imgsz: int) -> np.ndarray:
    """One image as ultralytics feeds it to a fixed-shape model: 1x3ximgszximgsz float32 RGB in 0..1."""
    import cv2

    offline_ultralytics()
    from ultralytics.data.augment import LetterBox

    image = cv2.imread(str(image_path))
    if image is None:
        raise UserError(f"{image_path}: not a readable image")
    height, width = image.shape[:2]
    ratio = imgsz / max(height, width)
    if ratio != 1:
        size = (min(math.ceil(width * ratio), imgsz), min(math.ceil(height * ratio), imgsz))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    image = LetterBox(new_shape=(imgsz, imgsz), auto=False, scaleup=False)(image=image)
    chw = np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1))
    return (chw.astype(np.float32) / 255.0)[None]


def _calibration_reader(images: list[Path], imgsz: int, input_name: str) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class LetterboxCalibrationReader(CalibrationDataReader):
        """Feeds the calibration images one at a time, preprocessed like ultralytics' validator."""

        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = iter(())
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

        def rewind(self) -> None:
            self._batches = ({input_name: preprocess(path, imgsz)} for path in images)

    return LetterboxCalibrationReader()


def engine_device(device: str) -> str:
    """The GPU a TensorRT engine is built on, and tied to: `device` when that is a GPU, else the first one."""
    return device if device.startswith("cuda") else "cuda:0"


def export_weights(weights: Path, out_dir: Path, formats: tuple[str, ...], imgsz: int | None = None,
                   device: str = "cpu") -> tuple[int, dict[str, Path]]:
    """The image size of the exports, and ultralytics' exports at that size (one load of the .pt).

    Exports use the training size unless `imgsz` says otherwise, so their numbers compare with training's.
    "onnx" is FP32, fixed shape,
    slimmed by onnxslim, with the metadata ultralytics needs to load it; "engine" is FP16 TensorRT, built
    on (and tied to) the GPU it will run on (`engine_device`).
    """
    ultralytics = offline_ultralytics()  # which also never pip-installs a missing export requirement
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:  # ultralytics writes next to the weights
        local = Path(scratch) / weights.name
        shutil.copyfile(weights, local)
        model = ultralytics.YOLO(str(local), task="detect")
        imgsz = imgsz or int(model.overrides.get("imgsz") or 640)
        files = {}
        for name in formats:
            on = engine_device(device) if name == "engine" else device
            exported = Path(model.export(imgsz=imgsz, device=on, **ULTRALYTICS_EXPORTS[name]))
            files[name] = Path(shutil.move(exported, out_dir / f"{weights.stem}{exported.suffix}"))
    return imgsz, files


def stem_nodes(model: Any) -> list[str]:
    """The nodes that read the graph input (the image): for a YOLO detector, its first convolution."""
    image = model.graph.input[0].name
    return [node.name for node in model.graph.node if image in node.input]


def quantize_int8(fp32: Path, out: Path, images: list[Path], imgsz: int, recipe: Int8Recipe = INT8) -> Path:
    """Static QDQ INT8 quantization calibrated on `images`; keeps the metadata ultralytics needs to load it."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = onnx.load(str(fp32))
    input_name = source.graph.input[0].name
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), _calibration_reader(images, imgsz, input_name),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=QUANTIZED_OPS,
                        nodes_to_exclude=stem_nodes(onnx.load(str(prepared))) if recipe.float_stem else [])
    quantized = onnx.load(str(out))
    present = {prop.key for prop in quantized.metadata_props}
    missing = [prop for prop in source.metadata_props if prop.key not in present]
    if missing:
        quantized.metadata_props.extend(missing)
        onnx.save(quantized, str(out))
    return out


def latency_ms(model_file: Path, imgsz: int, sample: Path) -> float:
    """Median wall time of one inference on a real image, on one CPU thread (stable on a shared node)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: preprocess(sample, imgsz)}
    for _ in range(LATENCY_WARMUP_RUNS):
        session.run(None, feed)
    timings = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        session.run(None, feed)
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def exported_map(model_file: Path, data_yaml: Path, imgsz: int) -> dict[str, float]:
    """mAP of an exported model on the val split, by ultralytics' validator (batch 1: the model has a fixed shape)."""
    with tempfile.TemporaryDirectory() as scratch:  # the validator's own output is not an export
        metrics = offline_ultralytics().YOLO(str(model_file), task="detect").val(
            data=str(data_yaml), imgsz=imgsz, batch=1, device="cpu", workers=0, plots=False, verbose=False,
            project=scratch, name="val")
    return {"map50": float(metrics.box.map50), "map50_95": float(metrics.box.map)}


def require_tensorrt() -> None:
    """TensorRT is for GPU nodes only: fail before any work when CUDA or the tensorrt package is missing."""
    import torch

    if not torch.cuda.is_available():
        raise UserError("--formats engine: TensorRT needs a CUDA GPU and none is visible here; "
                        "export it on the GPU node that serves it, or use onnx/int8 on CPU")
    try:
        import tensorrt  # noqa: F401  (ultralytics would otherwise try to install it)
    except ImportError:
        raise UserError("--formats engine: the tensorrt package is not installed in this image") from None


def parse_formats(text: str, parameter: str = "--formats") -> tuple[str, ...]:
    """The comma-separated export formats; an unknown or empty list is an error naming `parameter`."""
    formats = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    unknown = [name for name in formats if name not in SUPPORTED_FORMATS]
    if unknown or not formats:
        raise UserError(f"{parameter} {text!r}: choose from {', '.join(SUPPORTED_FORMATS)}")
    return formats


def export_model(weights: Path, data: Path, out_dir: Path, formats: tuple[str, ...] = ("onnx", "int8"),
                 device: str = "cpu") -> Exports:
    """Export the weights on `device` ("cpu", "cuda", "cuda:N"), measure each model's mAP and latency on val,
    and write exports.json."""
    device = check_single_device(device)
    weights, out_dir = Path(weights), Path(out_dir)
    if not weights.is_file():
        raise UserError(f"--weights {weights}: no such file")
    formats = parse_formats(",".join(formats), "formats")
    if "engine" in formats:
        require_tensorrt()
    dataset = load_dataset(Path(data))
    images = calibration_images(dataset) if "int8" in formats else []
    on_cpu = "onnx" in formats or "int8" in formats  # INT8 starts from FP32 ONNX, which is kept as its reference
    samples = split_images(dataset, "val", "to measure the exports on") if on_cpu else []
    data_yaml = dataset.write_yaml(out_dir / "data.yaml")
    wanted = (("onnx",) if on_cpu else ()) + (("engine",) if "engine" in formats else ())
    imgsz, files = export_weights(weights, out_dir, wanted, device=device)
    engine = files.pop("engine", None)
    if images:
        files["int8"] = quantize_int8(files["onnx"], out_dir / f"{weights.stem}.int8.onnx", images, imgsz)
    models = [ExportedModel(name, str(path), path.stat().st_size, "int8" if name == "int8" else "fp32",
                            ONNX_RUNTIME_DEVICE, **exported_map(path, data_yaml, imgsz),
                            latency_ms=latency_ms(path, imgsz, samples[0]),
                            calibration_images=len(images) if name == "int8" else None)
              for name, path in files.items()]
    if engine:
        models.append(ExportedModel("engine", str(engine), engine.stat().st_size, "fp16", engine_device(device)))
    result = Exports(str(weights), str(data_yaml), imgsz, device, tuple(models))
    result.save(out_dir / "exports.json")
    return result
