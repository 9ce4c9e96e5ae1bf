"""Export of the frozen backbone: ONNX segments, ONNX Runtime and TensorRT runners.

The frozen graph is cut where the adapters attach (:mod:`export.segments`); every segment is
exported to ONNX with a manifest (:mod:`export.onnx`, :mod:`export.manifest`); runners execute the
segments while the experts and fusion stay in PyTorch (:mod:`export.runners`, the one call the
daemon makes is :func:`export.runners.attach_runner`). ``python -m export.trt`` builds TensorRT
engines (:mod:`export.trt`), ``python -m export.bench`` measures serving latency per runner and
``python -m export.parity`` prints how far each runner is from eager PyTorch. See docs/export.md.

Nothing heavy is imported here; this package knows nothing of the service.
"""
