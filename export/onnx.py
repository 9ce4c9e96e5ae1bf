"""ONNX export of the frozen segments, and ``python -m export.onnx``.

::

    python -m export.onnx --preset tiny --out artifacts/tiny
    python -m export.onnx --preset audioclip --weights clip=ViT-B-16.pt --weights audioclip=AudioCLIP.pt \\
        --out artifacts/audioclip --precision fp32 fp16

Every segment of :func:`export.segments.backbone_segments` is exported with the ``torch.export``
based exporter at the pinned :data:`OPSET`, with a dynamic batch dimension named ``batch``, as
``<segment>.<precision>.onnx``. ``fp32`` is always written; ``fp16`` is a second export of a
half-precision copy of the segment, meant for GPU runtimes (TensorRT takes precision from the ONNX
types in a strongly typed network). The FP32 file of each segment is checked against the eager
module on the example batch before the manifest is written; the manifest is written last, so a
folder without one (or with one that does not match the backbone) is simply exported again.
"""

from __future__ import annotations

import argparse
import copy
import io
import logging
import shutil
import sys
import time
import warnings
from contextlib import redirect_stdout
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch

from export.decompositions import decompose_unsupported
from export.errors import ManifestError, SegmentExportError
from export.manifest import PRECISIONS, Manifest, SegmentEntry, SegmentFile, TensorSpec, file_sha256
from export.segments import Segment, backbone_segments, external_onnx_files, segment_example_args
from model.backbone import TriModalBackbone, WeightFiles, build_backbone, preset_names

OPSET = 18
"""Pinned ONNX opset: LayerNormalization and STFT are native from 17; TensorRT 10 parses 18."""

BATCH_DIM = "batch"
SEQUENCE_DIM = "sequence"
MAX_BATCH = 4096

log = logging.getLogger("export")

_ONNX_DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
}


def exporter_versions() -> dict[str, str]:
    import onnxscript

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__}


def segment_file_name(segment: str, precision: str) -> str:
    return f"{segment}.{precision}.onnx"


def export_onnx(
    backbone: TriModalBackbone,
    out_dir: Path,
    *,
    precisions: Sequence[str] = ("fp32",),
    source_weights: WeightFiles | None = None,
    segments: list[Segment] | None = None,
    reuse: Manifest | None = None,
) -> Manifest:
    """Exports every frozen segment of ``backbone`` to ``out_dir`` and writes the manifest.

    ``reuse``: a manifest of ``out_dir`` already checked against ``backbone``; its files are kept and
    only the precisions it lacks are exported.

    Raises:
        SegmentExportError: a segment could not be exported, or its ONNX output differs from PyTorch.
    """
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"precisions: unknown {p!r}; choose from {PRECISIONS}")
    precisions = ["fp32", *sorted({p for p in precisions if p != "fp32"})]
    backbone = _on_cpu(backbone)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backbone = backbone.eval()
    segments = segments if segments is not None else backbone_segments(backbone)
    examples = segment_example_args(backbone, segments)
    started = time.perf_counter()
    entries = []
    for seg in segments:
        if seg.role == "external":
            entries.append(_external_entry(seg, examples[seg.name], out_dir))
            continue
        previous = reuse.segment(seg.name).files if reuse is not None else {}
        files: dict[str, SegmentFile] = {}
        # Half copies are made before the FP32 export touches the module.
        modules = {p: copy.deepcopy(seg.module).half() if p == "fp16" else seg.module
                   for p in precisions if p not in previous}
        for precision in precisions:
            path = out_dir / segment_file_name(seg.name, precision)
            if precision in previous:  # checked by the caller: same weights, unchanged file
                files[precision] = previous[precision]
                continue
            _export_one(seg, modules[precision], examples[seg.name], path, precision)
            if precision == "fp32":
                _verify(seg, examples[seg.name], path)
            elif not _finite(examples[seg.name], path):
                # Values FP16 cannot hold (the ESResNeXt log floor 1e-18 underflows to log(0)): this
                # segment stays FP32 in the fp16 variant; runners cast by the file's own input types.
                log.warning("%s: the FP16 export is not finite on the example batch; its fp16 variant "
                            "uses the FP32 file", seg.name)
                path.unlink()
                files[precision] = files["fp32"]
                continue
            files[precision] = SegmentFile(path.name, file_sha256(path))
        inputs, outputs = _io_specs(out_dir / files["fp32"].path)
        entries.append(SegmentEntry(seg.name, seg.tower, seg.role, seg.index, seg.weights_sha256(), inputs, outputs,
                                    files, max_sequence=seg.max_sequence))
    manifest = Manifest(
        preset=backbone.config.name,
        opset=OPSET,
        versions=exporter_versions(),
        segments=tuple(entries),
        source_weights=_source_weights(source_weights) or (reuse.source_weights if reuse is not None else {}),
    )
    manifest.save(out_dir)
    log.info("exported %d segments of %r (%s) to %s in %.1f s", len(entries), manifest.preset,
             "+".join(precisions), out_dir, time.perf_counter() - started)
    return manifest


def ensure_exported(
    backbone: TriModalBackbone, out_dir: Path, *, precisions: Sequence[str] = ("fp32",)
) -> tuple[Manifest, bool]:
    """The folder's manifest if it is valid for ``backbone`` and has ``precisions``; else a new export.

    Returns the manifest and whether an export ran. The frozen segments never change when experts are
    added, so a manifest stays valid across learned tasks.
    """
    # Hashed where the backbone is (one tensor at a time reaches the CPU): a GPU backbone is copied
    # to the CPU only when an export runs, not at every runner attach.
    hashed = backbone_segments(backbone)
    weights = [(s.name, s.weights_sha256()) for s in hashed]
    segments = hashed if backbone.device.type == "cpu" else None  # else export_onnx cuts its CPU copy
    try:
        manifest = Manifest.load(out_dir)
        manifest.check_weights(backbone.config.name, weights)
        if manifest.opset != OPSET:
            raise ManifestError("opset", f"{manifest.opset} is not the pinned {OPSET}")
        manifest.check_files(out_dir, "fp32")
    except ManifestError as exc:
        log.info("exporting the frozen segments to %s (%s)", out_dir, exc)
        return export_onnx(backbone, out_dir, precisions=precisions, segments=segments), True
    usable = {"fp32"}
    for p in manifest.precisions() - usable:
        try:
            manifest.check_files(out_dir, p)
            usable.add(p)
        except ManifestError as exc:
            log.info("%s files of %s are stale (%s)", p, out_dir, exc)
    if set(precisions) <= usable:
        return manifest, False
    keep = Manifest(manifest.preset, manifest.opset, manifest.versions,
                    tuple(replace(s, files={p: f for p, f in s.files.items() if p in usable}) for s in manifest.segments),
                    manifest.source_weights)
    wanted = sorted(usable | set(precisions))
    log.info("exporting %s segments to %s", "+".join(sorted(set(precisions) - usable)), out_dir)
    return export_onnx(backbone, out_dir, precisions=wanted, segments=segments, reuse=keep), True


def _on_cpu(backbone: TriModalBackbone) -> TriModalBackbone:
    """Tracing and the checks against ONNX Runtime run on the CPU: a backbone served from a GPU is
    exported from a CPU copy (the files and weight hashes are the same)."""
    return backbone if backbone.device.type == "cpu" else backbone.copy_on("cpu")


def _external_entry(seg: Segment, args: tuple[torch.Tensor, ...], out_dir: Path) -> SegmentEntry:
    """An encoder that is already ONNX: its files are copied next to the manifest, not re-exported."""
    sources = external_onnx_files(seg.source)
    assert sources is not None
    copied = []
    for src in sources:
        dst = out_dir / f"{seg.name}.{src.name}"
        shutil.copyfile(src, dst)
        copied.append(SegmentFile(dst.name, file_sha256(dst)))
    with torch.no_grad():
        feature = seg.module(*args)
    inputs = (TensorSpec(seg.input_names[0], "float32", (BATCH_DIM, *args[0].shape[1:])),)
    outputs = (TensorSpec(seg.output_names[0], "float32", (BATCH_DIM, *feature.shape[1:])),)
    return SegmentEntry(seg.name, seg.tower, seg.role, seg.index, seg.weights_sha256(), inputs, outputs,
                        external_files=tuple(copied))


def _export_one(
    seg: Segment, module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, precision: str
) -> None:
    if precision == "fp16":
        args = tuple(a.half() if a.is_floating_point() else a for a in args)
    batch = torch.export.Dim(BATCH_DIM, min=1, max=MAX_BATCH)
    dims: dict[int, Any] = {0: batch}
    if seg.max_sequence is not None:
        dims[1] = torch.export.Dim(SEQUENCE_DIM, min=1, max=seg.max_sequence)
    dynamic = tuple(dict(dims) for _ in args)
    tmp = path.with_suffix(".onnx.tmp")
    modes = {m: m.training for m in module.modules()}
    module.eval()  # the frozen pieces are exported for inference; their modes are restored below
    try:
        with redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the exporter prints its progress
            # torch.export's own use of a pytree API it deprecated (torch 2.11); nothing to fix here.
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            # Every input's batch axis is the same Dim; the exporter notes that it merges their names.
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used", category=UserWarning)
            program = torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)
            program = decompose_unsupported(program)
            torch.onnx.export(
                program, (), str(tmp), input_names=list(seg.input_names[: len(args)]),
                output_names=list(seg.output_names), opset_version=OPSET, dynamo=True,
                external_data=False, verbose=False,
            )
    except Exception as exc:  # the exporter raises many unrelated types
        tmp.unlink(missing_ok=True)
        raise SegmentExportError(seg.name, f"ONNX export ({precision}) failed: {type(exc).__name__}: {exc}") from exc
    finally:
        for m, training in modes.items():
            m.train(training)
    _name_dynamic_dims(tmp, with_sequence=seg.max_sequence is not None)
    tmp.replace(path)


def _name_dynamic_dims(path: Path, with_sequence: bool) -> None:
    """Renames the exporter's symbols (``s77``) to ``batch`` and ``sequence`` everywhere in the graph."""
    model = onnx.load(str(path))
    first = model.graph.input[0].type.tensor_type.shape.dim
    names = {first[0].dim_param: BATCH_DIM}
    if with_sequence:
        names[first[1].dim_param] = SEQUENCE_DIM
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param in names:
                d.dim_param = names[d.dim_param]
    onnx.save(model, str(path))


def _io_specs(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    model = onnx.load(str(path), load_external_data=False)

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        t = value.type.tensor_type
        dims = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim)
        return TensorSpec(value.name, _ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), dims)

    return tuple(spec(v) for v in model.graph.input), tuple(spec(v) for v in model.graph.output)


def _finite(args: tuple[torch.Tensor, ...], path: Path) -> bool:
    """Whether the (half-precision) file gives finite outputs on the example batch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: (a.half() if a.is_floating_point() else a).numpy() for i, a in zip(session.get_inputs(), args)}
    return all(np.isfinite(out).all() for out in session.run(None, feeds) if out.dtype.kind == "f")


def _verify(seg: Segment, args: tuple[torch.Tensor, ...], path: Path) -> None:
    """The exported FP32 file reproduces the eager segment on the example batch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    got = session.run(None, feeds)
    with torch.no_grad():
        want = seg.module(*args)
    want = want if isinstance(want, tuple) else (want,)
    for name, g, w in zip(seg.output_names, got, want):
        ref = w.numpy()
        tol = 1e-3 * max(1.0, float(np.abs(ref).max())) if ref.dtype.kind == "f" else 0
        if g.shape != ref.shape or float(np.abs(g - ref).max(initial=0)) > tol:
            raise SegmentExportError(seg.name, f"ONNX output {name!r} differs from PyTorch beyond {tol:g}")


def _source_weights(files: WeightFiles | None) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for f in fields(WeightFiles):
        path = getattr(files, f.name) if files is not None else None
        if path is not None:
            out[f.name] = {"path": str(path), "sha256": file_sha256(Path(path))}
    return out


# -- command line -----------------------------------------------------------------------------------
def parse_weights(values: Sequence[str]) -> WeightFiles:
    """``["clip=/m/ViT-B-16.pt", ...]`` -> :class:`WeightFiles`; unknown names and missing files are errors."""
    known = [f.name for f in fields(WeightFiles)]
    chosen: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not path:
            raise ValueError(f"--weights: expected NAME=PATH, got {value!r}")
        if name not in known:
            raise ValueError(f"--weights: unknown weight file {name!r}; choose from {known}")
        if not Path(path).is_file():
            raise ValueError(f"--weights: {name} file {path} does not exist")
        chosen[name] = Path(path)
    return WeightFiles(**chosen)


def add_weights_argument(parser: argparse.ArgumentParser) -> None:
    """``--weights NAME=PATH`` (repeatable), read with :func:`parse_weights`."""
    parser.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                        help="weight file a preset needs, e.g. clip=ViT-B-16.pt (repeatable)")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, help=f"backbone preset ({', '.join(preset_names())})")
    add_weights_argument(parser)
    parser.add_argument("--out", required=True, type=Path, help="folder for the ONNX files and manifest.json")


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnxscript", "onnx_ir"):  # the exporter's optimiser logs every pass at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)


def check_preset(parser: argparse.ArgumentParser, preset: str) -> None:
    if preset not in preset_names():
        parser.error(f"--preset: unknown {preset!r}; choose from {preset_names()}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.onnx", description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=PRECISIONS,
                        help="precisions to write (fp32 is always written)")
    args = parser.parse_args(argv)
    configure_logging()
    check_preset(parser, args.preset)
    try:
        weights = parse_weights(args.weights)
    except ValueError as exc:
        parser.error(str(exc))
    backbone = build_backbone(args.preset, weights)
    try:
        manifest = export_onnx(backbone, args.out, precisions=args.precision, source_weights=weights)
    except SegmentExportError as exc:
        print(f"export.onnx: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(manifest.segments)} segments and manifest.json to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
