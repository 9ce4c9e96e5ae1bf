"""What answers Classify from a base's features and a version's head, with NumPy and ONNX Runtime only.

    serving/sessions.py  ONNX Runtime CPU sessions sharing one memory arena
    serving/head.py      ``ServedHead``: a version's statistics head as arrays (scores, unknown, ranking)
    serving/base.py      ``BaseGraphs``: the frozen image encoder of a base, compiled once, cached by digest

Nothing here imports PyTorch (``tests/serving`` checks it): a version that differs from the last
only in its head is served by swapping a ``ServedHead`` in, never by compiling a graph.
"""
