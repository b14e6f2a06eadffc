"""Whether training caches decoded images in RAM: only when they fit in the pod's memory limit.

ultralytics' own check (`cache="ram"`) compares the cache with the host's free memory (psutil),
not with the container's cgroup limit, so on a large node a pod with a small limit caches
itself into an OOM kill. "auto" estimates the decoded images at the training size from their
headers, and caches them only when that, with headroom, fits in the cgroup limit beside what
training itself needs. When /dev/shm cannot hold twice the cache, ultralytics gives every
dataloader worker its own copy, and the estimate counts those copies too.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from components.errors import UserError
from components.log import LOG

CACHE_CHOICES = ("auto", "ram", "disk", "none")
CGROUP_MEMORY_LIMITS = (Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
                        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))  # cgroup v1
SHARED_MEMORY = Path("/dev/shm")
SAMPLED_IMAGES = 64  # headers read to estimate the whole split
GIB = 1 << 30



@dataclass(frozen=True)
class CacheBudget:
    """What the RAM cache must leave room for: a share of headroom on its own estimate, and training itself
    (torch, CUDA context, the model, pinned batches; each dataloader worker holds augmented batches)."""

    headroom: float = 0.5
    training_bytes: int = 6 * GIB
    worker_bytes: int = GIB // 2


@dataclass(frozen=True)
class CacheDecision:
    setting: str | bool  # ultralytics' `cache` argument: "ram", "disk" or False
    reason: str


def memory_limit(limit_files: tuple[Path, ...] = CGROUP_MEMORY_LIMITS) -> int | None:
    """The container's memory limit in bytes from the first cgroup file present; None when unlimited
    ("max", or a v1 value beyond the machine's memory) or outside a cgroup."""
    import psutil

    for path in limit_files:
        if path.is_file():
            text = path.read_text().strip()
            if text == "max":
                return None
            try:
                limit = int(text)
            except ValueError:
                raise UserError(f"{path}: expected a byte count or 'max', found {text!r}") from None
            return limit if limit < psutil.virtual_memory().total else None
    return None


def decoded_bytes(images: list[Path], imgsz: int, sample: int = SAMPLED_IMAGES) -> int:
    """The split's images as the RAM cache holds them: BGR uint8, long side resized to imgsz; estimated from the
    headers of up to `sample` images spread over the split."""
    if not images:
        return 0
    chosen = images[::max(1, len(images) // sample)][:sample]
    total = 0
    for path in chosen:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except OSError as error:
            raise UserError(f"{path}: not a readable image ({error})") from None
        ratio = imgsz / max(width, height)  # ultralytics' load_image: long side to imgsz, rounded up
        total += min(math.ceil(width * ratio), imgsz) * min(math.ceil(height * ratio), imgsz) * 3
    return total * len(images) // len(chosen)


def choose_cache(cache: str, images: list[Path], imgsz: int, workers: int, ranks: int = 1,
                 budget: CacheBudget = CacheBudget(), limit_files: tuple[Path, ...] = CGROUP_MEMORY_LIMITS,
                 shared_memory: Path = SHARED_MEMORY) -> CacheDecision:
    """ultralytics' cache setting for `cache` (auto, ram, disk, none); "auto" caches in RAM only when it fits.

    `workers` are dataloader workers per rank; with DDP each of the `ranks` processes caches its own copy.
    """
    choice = cache.strip().lower()
    if choice not in CACHE_CHOICES:
        raise UserError(f"cache {cache!r}: choose from {', '.join(CACHE_CHOICES)}")
    if choice != "auto":
        decision = CacheDecision(False if choice == "none" else choice, "as configured")
    else:
        decision = _fits(decoded_bytes(images, imgsz), len(images), workers, ranks, budget, limit_files,
                         shared_memory)
    LOG.info(f"image cache: {decision.setting or 'none'} ({decision.reason})")
    return decision


def _fits(cache_bytes: int, image_count: int, workers: int, ranks: int, budget: CacheBudget,
          limit_files: tuple[Path, ...], shared_memory: Path) -> CacheDecision:
    import psutil

    limit = memory_limit(limit_files)
    available = limit if limit is not None else psutil.virtual_memory().available
    where = "the cgroup memory limit" if limit is not None else "available memory (no cgroup limit)"
    # ultralytics' own rule: a /dev/shm too small for twice the cache gets every worker a copy of it
    copied = workers > 0 and shared_memory.is_dir() and shutil.disk_usage(shared_memory).free < 2 * cache_bytes
    copies = ranks * (1 + workers if copied else 1)
    training = (budget.training_bytes + budget.worker_bytes * workers) * ranks  # every rank is a process of its own
    needed = cache_bytes * (1 + budget.headroom) * copies + training
    why = (" as /dev/shm is too small to share them" if copied else "") + (" (one per GPU)" if ranks > 1 else "")
    sizes = (f"{image_count} train images are about {cache_bytes / GIB:.1f} GiB decoded"
             f"{f', {copies} copies{why}' if copies > 1 else ''}; with "
             f"{budget.headroom:.0%} headroom and training's own memory that needs {needed / GIB:.1f} GiB of "
             f"{available / GIB:.1f} GiB ({where})")
    return CacheDecision("ram", sizes) if needed <= available else CacheDecision(False, sizes)
