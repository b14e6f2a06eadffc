"""Which torch device a step runs on, checked before any work: a missing GPU is an error, never a fallback.

Light on purpose (torch is imported inside the functions), so that evaluation and export can check
their device without importing the training module.
"""

from __future__ import annotations

from components.errors import UserError


def check_device(device: str) -> str:
    """Refuse CUDA training without CUDA at once: a silent fallback would run 100 epochs on CPU.

    Returns the device as ultralytics takes it: "cpu", "mps", or GPU indices ("0", "0,1").
    """
    import torch

    wanted = device.strip().lower()
    if wanted in {"cpu", "mps"}:
        return wanted
    indices = [] if wanted in {"cuda", ""} else wanted.replace("cuda:", "").split(",")
    if not torch.cuda.is_available():
        raise UserError(f"device {device!r} asks for CUDA, but CUDA is not available on this machine "
                        "(torch.cuda.is_available() is False); pass --device cpu to run on CPU on purpose")
    if any(not index.isdigit() or int(index) >= torch.cuda.device_count() for index in indices):
        raise UserError(f"device {device!r} names a GPU this machine does not have "
                        f"({torch.cuda.device_count()} visible)")
    return ",".join(indices) if indices else "0"


def training_device(device: str, num_gpus: str) -> str:
    """`cuda` with N GPUs becomes the device list ultralytics uses for DDP on one node."""
    if not num_gpus.isdigit() or int(num_gpus) < 1:
        raise UserError(f"num_gpus {num_gpus!r}: give a whole number of GPUs, at least 1")
    if device == "cuda" and int(num_gpus) > 1:
        return ",".join(str(index) for index in range(int(num_gpus)))
    return device


def check_single_device(device: str) -> str:
    """One device for evaluation or export, as torch names it ("cpu", "mps", "cuda:N"), checked like training's."""
    checked = check_device(device)
    if "," in checked:
        raise UserError(f"device {device!r} names several GPUs; evaluation and export run on one (cuda or cuda:N)")
    return checked if checked in {"cpu", "mps"} else f"cuda:{checked}"
