"""tests/images/containers runs the built images; `make test-images` builds them and sets
POGONA_IMAGE_TESTS=1. Elsewhere (plain `make test`) that tier is not collected at all."""

from __future__ import annotations

import os

collect_ignore = [] if os.environ.get("POGONA_IMAGE_TESTS") == "1" else ["containers"]
