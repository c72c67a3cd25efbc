"""Writing what must not be lost: atomic files, checked folders, a rescue folder, and the one checkpoint format."""
