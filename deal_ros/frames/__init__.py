"""A training frame: its tags, the checks it must pass, its augmentation and the bounded buffer it waits in."""
