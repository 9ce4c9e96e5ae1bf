"""`zero-shot`: no training at all; fused features are matched against text prototypes."""

from __future__ import annotations

from model.strategies.base import Strategy


class ZeroShot(Strategy):
    name = "zero-shot"
    trains = False
