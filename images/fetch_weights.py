"""Bake base weights into an image, for clusters whose pods cannot reach the internet.

Usage: fetch_weights.py DEST_DIR [URL ...]. Each URL is saved under its file name
(`.../yolo11s.pt` -> DEST_DIR/yolo11s.pt). With no URL it only creates DEST_DIR, so the
image layout is the same with or without baked weights.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlparse


def fetch(dest_dir: Path, urls: list[str]) -> None:
    dest_dir.mkdir(parents=True, exist_ok=True)
    for url in urls:
        name = Path(urlparse(url).path).name
        if not name.endswith(".pt"):
            sys.exit(f"fetch_weights: {url} does not name a .pt file")
        target = dest_dir / name
        partial = target.with_suffix(".pt.partial")
        with urllib.request.urlopen(url, timeout=120) as response, partial.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        partial.rename(target)
        print(f"fetch_weights: {url} -> {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    fetch(Path(sys.argv[1]), sys.argv[2:])
