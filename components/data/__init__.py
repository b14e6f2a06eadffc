"""The dataset stage: snapshot manifests, validation, sync, push, the local dataset and the demo data."""
