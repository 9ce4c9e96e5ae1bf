"""The continual-learning model: encoders, MoE adapters, fusion, losses, strategies and metrics.

Nothing in this package knows about gRPC or the daemon. The public entry points are:

- :func:`model.backbone.build_backbone` builds a tri-modal backbone from a preset name;
- :func:`model.strategies.create_learner` builds a learner (``mcil``, ``lwf``, ...) around it;
- :mod:`model.record` keeps a run's accuracy matrices and turns them into the figures of
  docs/metrics.md, with the formulas of :mod:`model.metrics`;
- the benchmark and its probes are not part of this package: they live in :mod:`bench`
  (``python -m bench``), which imports this package; nothing here imports it.
"""
