"""Bake base weights into an image, for clusters whose pods cannot reach the internet.

Usage: fetch_weights.py DEST_DIR [URL[#sha256=HEX] ...]. Each URL is saved under its file name
(`.../yolo11s.pt` -> DEST_DIR/yolo11s.pt); with `#sha256=HEX` a file whose digest differs fails
the build and is not kept. With no URL it only creates DEST_DIR, so the image layout is the same
with or without baked weights.
"""

from __future__ import annotations

import hashlib
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urlparse


def fetch(dest_dir: Path, urls: list[str]) -> None:
    dest_dir.mkdir(parents=True, exist_ok=True)
    for pinned in urls:
        url, fragment = urldefrag(pinned)
        expected = fragment.removeprefix("sha256=").lower() if fragment else ""
        if fragment and (not fragment.startswith("sha256=") or len(expected) != 64):
            sys.exit(f"fetch_weights: {pinned}: the fragment must be #sha256=<64 hex digits>")
        name = Path(urlparse(url).path).name
        if not name.endswith(".pt"):
            sys.exit(f"fetch_weights: {url} does not name a .pt file")
        target = dest_dir / name
        partial = target.with_suffix(".pt.partial")
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=120) as response, partial.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if expected and digest.hexdigest() != expected:
            partial.unlink()
            sys.exit(f"fetch_weights: {url} has sha256 {digest.hexdigest()}, expected {expected}: "
                     "the file changed; check it and pin the new digest")
        partial.rename(target)
        print(f"fetch_weights: {url} -> {target} ({target.stat().st_size} bytes, sha256 {digest.hexdigest()})")


if __name__ == "__main__":
    fetch(Path(sys.argv[1]), sys.argv[2:])
