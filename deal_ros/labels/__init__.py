"""Labels: pseudo-labels from CAMs and tags, their colours for overlays, and the metrics that score them."""
