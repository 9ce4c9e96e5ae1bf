"""Encoder architectures, each cut into a :class:`model.towers.Tower` (or frozen whole, for audio)."""
