"""Where and how the work runs: the device (never a silent fallback) and training beside inference in one process."""
