"""What changed in the dataset since the snapshot the production model was trained on.

A nightly run trains because the fingerprint differs; this says how: images added, removed
and changed, label files added, removed and edited, per split and modality, and renamed or
added classes. Entries are matched by key; an entry whose content differs (`ManifestEntry.same_content`) has changed,
and one that data.yaml put in another split left the old split and joined the new one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components import layout
from components.errors import UserError
from components.data.snapshot import IMAGE_ROLE, LABEL_ROLE, Manifest, ManifestEntry
from components.storage import StorageError, open_store, write_atomic

@dataclass
class GroupChanges:
    split: str
    modality: str
    images_added: int = 0
    images_removed: int = 0
    images_changed: int = 0
    labels_added: int = 0
    labels_removed: int = 0
    labels_edited: int = 0


@dataclass(frozen=True)
class SnapshotChanges:
    baseline: str  # which snapshot was compared, in words
    compared: bool = False  # False: there was nothing to compare with (`baseline` says why)
    groups: tuple[GroupChanges, ...] = ()
    names_before: dict[int, str] = field(default_factory=dict)
    names_after: dict[int, str] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        write_atomic(Path(path), (json.dumps(asdict(self), indent=1) + "\n").encode())


_COUNTED_AS = {IMAGE_ROLE: {"added": "images_added", "removed": "images_removed", "changed": "images_changed"},
               LABEL_ROLE: {"added": "labels_added", "removed": "labels_removed", "changed": "labels_edited"}}


def compare_snapshots(before: Manifest, after: Manifest, baseline: str) -> SnapshotChanges:
    """The changes from `before` to `after`, per split and modality (groups without changes left out)."""
    groups: dict[tuple[str, str], GroupChanges] = {}
    old = {entry.key: entry for entry in before.entries}
    new = {entry.key: entry for entry in after.entries}

    def count(entry: ManifestEntry, change: str) -> None:
        if entry.role not in _COUNTED_AS:  # an image list: the images it names are counted
            return
        group = groups.setdefault((entry.split, entry.modality), GroupChanges(entry.split, entry.modality))
        name = _COUNTED_AS[entry.role][change]
        setattr(group, name, getattr(group, name) + 1)

    for key, entry in new.items():
        if key not in old:
            count(entry, "added")
        elif old[key].split != entry.split:  # data.yaml moved it: it left one split and joined another
            count(old[key], "removed")
            count(entry, "added")
        elif not old[key].same_content(entry):
            count(entry, "changed")
    for key, entry in old.items():
        if key not in new:
            count(entry, "removed")
    ordered = tuple(group for _, group in sorted(groups.items()))
    return SnapshotChanges(baseline, True, ordered, dict(before.names), dict(after.names))


def changes_since_champion(store_uri: str, champion: dict[str, Any] | None, manifest_path: Path) -> SnapshotChanges:
    """Compare the run's snapshot with `runs/<champion run>/manifest.json` in the store; the baseline says
    why nothing could be compared when there is no champion or its manifest cannot be read."""
    if champion is None:
        return SnapshotChanges("no production model yet: nothing to compare with")
    key = layout.run_manifest(champion.get('run_id'))
    store = open_store(store_uri)
    where = store.url(key)
    try:
        before = Manifest.parse(store.get_bytes(key).decode(), where)
    except (StorageError, UserError, UnicodeDecodeError) as exc:
        return SnapshotChanges(f"the snapshot of production run {champion.get('run_id')} could not be read: {exc}")
    return compare_snapshots(before, Manifest.load(manifest_path),
                             f"the snapshot production run {champion.get('run_id')} was trained on ({where}, "
                             f"fingerprint {before.fingerprint[:16]}, read {before.created})")
