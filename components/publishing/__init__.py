"""The publishing stage: the run uploaded, the champion replaced, the nightly attempts recorded."""
