"""The training stage: the CPU sanity gate and multi-epoch training, guarded and resumable."""
