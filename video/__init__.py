"""Video in, timeline out: recordings, cameras and streams as the daemon's pictures and sounds.

    video/source.py    a source decoded into steps (a picture and the sound around it), with PyAV
    video/clips.py     labelled clips -> examples to learn from (``mcil learn --video``)
    video/timeline.py  answers per step -> segments; the timeline written as CSV, JSON, SVG or PNG
    video/watch.py     ``mcil watch``: steps to Classify in batches, live lines, dropping when behind
    video/compose.py   writing a recording from pictures and sounds (tests and the benchmark)
    video/bench.py     ``python -m video.bench``: watching a long 720p recording, time and memory
"""
