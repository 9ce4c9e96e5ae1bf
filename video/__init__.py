"""Video in, timeline out: recordings, cameras and streams as the daemon's pictures and sounds.

    video/source.py    a source decoded into steps (a picture and the sound around it), with PyAV
    video/clips.py     labelled clips -> examples to learn from (``mcil learn --video``)
    video/timeline.py  answers per step -> segments; the timeline written as CSV, JSON, SVG or PNG
    video/watch.py     the watch loop: steps to Classify in batches; a live source drops steps when behind
    video/command.py   ``mcil watch``'s options, live lines and the daemon's answers
    video/compose.py   writing a recording from pictures and sounds (make-samples, tests, the benchmark)

The benchmark (``python -m bench.watch``) lives with the other benchmarks, in bench/.
"""
