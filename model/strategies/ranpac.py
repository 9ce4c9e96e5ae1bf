"""`ranpac`: nothing trains; the analytic head over a random ReLU expansion of the frozen features.

RanPAC (McDonnell et al., NeurIPS 2023) on the frozen encoders: the image and audio encoders' own
outputs, each L2-normalised, a fixed random projection to M = 2000 dimensions with a ReLU, and ridge
regression solved from the accumulated Gram matrix and class sums (model/heads.py). No example is
stored; learning a task is one forward pass and one solve.
"""

from __future__ import annotations

from model.strategies.base import Strategy


class RanPAC(Strategy):
    name = "ranpac"
    trains = False
    head_kind = "analytic"
    head_features = "frozen"
    head_expansion = 2000
