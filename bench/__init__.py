"""The tools around the model: the benchmark, its suite, the probes.

They measure the continual-learning model (:mod:`model`); they are not part of what the daemon ships.
Imports point one way: this package imports :mod:`model`, and nothing in ``model``, ``service`` or
``export`` imports it. What the daemon itself reports after each task (:mod:`model.protocol`,
:mod:`model.record`) stays in ``model``.

- ``python -m bench`` (:mod:`bench.run`) runs the class-incremental benchmark; ``--suite`` runs a
  whole benchmark table (:mod:`bench.suite`);
- ``python -m bench.probe``: a two-task forgetting probe (where an old task's accuracy goes);
- ``python -m bench.routing_probe``: whether the router sends old tasks' images to their experts;
- ``python -m bench.ease_probe``: per-task experts with frozen routes against adapting once;
- ``python -m bench.open_set``: how often the learner answers ``unknown``.
"""
