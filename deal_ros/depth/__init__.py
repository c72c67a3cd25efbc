"""Depth as the method uses it: holes filled, resampled, depth-edge maps, image filters and the support-plane prior."""
