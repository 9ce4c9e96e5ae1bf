"""What answers Classify from a base's features and a version's head, with NumPy and ONNX Runtime only.

    serving/errors.py    what goes wrong, each error naming its field
    serving/sessions.py  ONNX Runtime sessions: on the CPU sharing one memory arena, or on a GPU (``Placement``)
    serving/base.py      ``BaseGraphs``: a base's frozen encoders as graphs, compiled once, cached by digest
    serving/inputs.py    pictures resized and normalised, sounds resampled and fitted, as the learner does
    serving/speech.py    the speech embedding (openWakeWord's ONNX files and what runs between them)
    serving/sounds.py    YAMNet: its log-mel front end in NumPy, its body as the base's ONNX graph
    serving/features.py  ``BaseFeatures``: raw pictures and sounds -> a base's features
    serving/head.py      ``ServedHead``: a version's statistics head as arrays (scores, unknown, ranking)
    serving/head_graph.py a head's scores as an ONNX graph, its arrays on the GPU where the base runs

Nothing here imports PyTorch (tests/serving checks it): a version that differs from the last only in
its head is served by swapping a ``ServedHead`` in, never by compiling a graph. The learner's own
speech embedding runs ``serving/speech.py`` too, so both sides compute the same speech features.
"""
