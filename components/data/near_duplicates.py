"""The same picture in two splits, found by what it looks like rather than by its bytes.

A photo re-saved at another JPEG quality, resized or converted to PNG has other bytes but
leaks just the same. Each image gets an appearance signature: its 64x64 grayscale thumbnail
less a 5x5 local mean (the fine texture, which re-encoding and resizing keep and two
different pictures do not share), scaled to unit length. Two signatures whose dot product
(their correlation) reaches `MIN_CORRELATION` are the same picture; overall layout is not
enough (two frames of one scene with the head in the same place share it). Comparing every
pair at 64x64 would cost more than the rest of validation, so pairs are first screened on
the texture pooled to 16x16, which keeps every copy far above `MIN_SCREEN_CORRELATION`.
Copies smaller than 64 px a side lose the texture compared here.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from components.config import SPLITS

THUMBNAIL_SIDE = 64
LOCAL_MEAN_RADIUS = 2  # 5x5 box
SCREEN_POOL = 4  # 64x64 texture pooled to 16x16 for the screen
MIN_CORRELATION = 0.85  # copies re-saved (JPEG 30) or resized (a quarter) >= 0.94 on the demo data, different
#                         pictures <= 0.6 (docs/benchmarks.md, "Validation")
MIN_SCREEN_CORRELATION = 0.5  # copies >= 0.96 on the pooled texture
_ROWS_PER_BLOCK = 512  # bounds the memory of the screen
_PAIRS_PER_BLOCK = 4096  # bounds the memory of the close comparison


def appearance(image: Image.Image) -> np.ndarray:
    """The image's appearance signature (float16, unit length; zero for a flat image)."""
    side, width = THUMBNAIL_SIDE, 2 * LOCAL_MEAN_RADIUS + 1
    gray = np.asarray(image.convert("L").resize((side, side), Image.Resampling.BOX), dtype=np.float64)
    sums = np.pad(np.pad(gray, LOCAL_MEAN_RADIUS, mode="edge"), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    local_mean = (sums[width:, width:] - sums[:-width, width:] - sums[width:, :-width] + sums[:-width, :-width])
    texture = (gray - local_mean / width ** 2).ravel()
    return _unit_rows(texture[None, :])[0].astype(np.float16)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows less their mean, scaled to unit length (flat rows stay zero)."""
    centred = matrix - matrix.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 1e-6)


def _screen(signatures: np.ndarray) -> np.ndarray:
    side = THUMBNAIL_SIDE // SCREEN_POOL
    pooled = signatures.reshape(len(signatures), side, SCREEN_POOL, side, SCREEN_POOL).mean(axis=(2, 4))
    return _unit_rows(pooled.reshape(len(signatures), -1)).astype(np.float32)


def _closest_matches(later: np.ndarray, earlier: np.ndarray) -> dict[int, tuple[float, int]]:
    """For each row of `later` that looks like a row of `earlier`: (correlation, index) of the closest."""
    screen_later, screen_earlier = _screen(later), _screen(earlier)
    closest: dict[int, tuple[float, int]] = {}
    for start in range(0, len(later), _ROWS_PER_BLOCK):
        rows, columns = np.nonzero(screen_later[start:start + _ROWS_PER_BLOCK] @ screen_earlier.T
                                   >= MIN_SCREEN_CORRELATION)
        rows += start
        for first in range(0, len(rows), _PAIRS_PER_BLOCK):
            pairs = slice(first, first + _PAIRS_PER_BLOCK)
            correlations = np.einsum("ij,ij->i", later[rows[pairs]], earlier[columns[pairs]])
            for row, column, correlation in zip(rows[pairs], columns[pairs], correlations):
                if correlation >= MIN_CORRELATION and correlation > closest.get(row, (-1.0, 0))[0]:
                    closest[int(row)] = (float(correlation), int(column))
    return closest


def near_duplicate_leakage(signatures: dict[str, dict[str, np.ndarray]], digests: dict[str, str]) -> list[str]:
    """One error per image that looks like an image in an earlier split, naming both keys (the closest
    match); byte-identical copies are left to the exact check. `signatures`: split -> key -> appearance."""
    errors = []
    for index, split in enumerate(SPLITS):
        later = sorted(signatures.get(split, {}).items())
        earlier = sorted((key, other) for other in SPLITS[:index] for key in signatures.get(other, {}))
        if not later or not earlier:
            continue
        matches = _closest_matches(np.stack([value for _, value in later]).astype(np.float32),
                                   np.stack([signatures[other][key] for key, other in earlier]).astype(np.float32))
        for row, (correlation, column) in sorted(matches.items()):
            key, (other_key, other_split) = later[row][0], earlier[column]
            if digests[key] != digests[other_key]:
                errors.append(f"{key}: leakage, looks like {other_key} in {other_split} (correlation "
                              f"{correlation:.2f}: the same picture re-saved or resized?)")
    return errors
