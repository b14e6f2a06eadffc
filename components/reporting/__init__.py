"""The reporting stage: the analysis a person used to write by hand, rendered with its plots."""
