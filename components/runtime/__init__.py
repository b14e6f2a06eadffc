"""Where steps run: the torch device, and ultralytics prepared to run without a network."""
