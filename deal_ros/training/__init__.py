"""Training: the online trainer (frames in, steps out) and the multi-process (torchrun) wrapper around it."""
