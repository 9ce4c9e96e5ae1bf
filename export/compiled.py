"""A committed version served as graphs on ONNX Runtime: the compiled version.

    compiled = CompiledVersion.compile(learner)           # export and check the graphs (lite: ~40 s, 2 cores)
    compiled.write(version_dir)                           # compiled.json + compiled.<path>.onnx
    compiled = CompiledVersion.load(version_dir, learner)  # checked against the learner it serves
    compiled.predict(samples, top_k=5)                    # what learner.predict answers, faster

The learner stays the source of truth: it validates and prepares the inputs (decoding, resizing,
the frozen audio encoder: ``Learner.encode_inputs``), owns the classes and the head's unknown
thresholds, and keeps learning. Only the forward from model-ready inputs to class scores runs on the
graphs (``export/served_graphs.py``): one ONNX Runtime call per modality path present in a batch.

Files name the learner state they were compiled from (:func:`state_sha256`) and hold each graph's
checksum: loading graphs next to a learner they were not compiled from, or damaged ones, raises
:class:`~export.errors.CompileError`, and the daemon then serves the hybrid path.

From the command line (the daemon runs this in a child process after each commit, so that the
exporter's memory and threads never live in the serving process)::

    python -m export.compiled VERSION_DIR --out DIR [--weights clip=ViT-B-16.pt] [--threads N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from export.child import add_child_arguments, apply_child_arguments, write_synced
from export.errors import CompileError
from export.served_graphs import GRAPH_PATHS, INPUTS, export_graphs, served_paths
from model.batch import ENCODE_CHUNK
from model.fusion import PATH_CODES
from model.samples import Prediction, check_top_k, rank
from serving.sessions import cpu_session as session

if TYPE_CHECKING:
    import onnxruntime

    from model.batch import EncodedBatch
    from model.learner import Learner
    from model.samples import Sample

FORMAT = 3  # 3: the av graph returns [answer | joint path's own scores], (B, 2K)
META_FILE = "compiled.json"


def graph_file(path: str) -> str:
    return f"compiled.{path}.onnx"


def state_sha256(learner: "Learner") -> str:
    """A digest of everything the graphs were built from: the learned tensors, the prototypes, the
    head's statistics as saved (its weights are solved from them again on load), the frozen image
    tower and projections (weight files a user names may change between starts), the learner's
    configuration and logit scale, the classes, and :data:`FORMAT` (how graphs are built)."""
    from dataclasses import asdict

    digest = hashlib.sha256()
    digest.update(f"format {FORMAT}|".encode())
    tensors = {f"learned.{k}": v for k, v in learner.learned_tensors().items()}
    tensors["prototypes"] = learner.prototypes.detach().cpu()
    frozen = {**learner.backbone.image.state_dict(prefix="image."),
              **learner.backbone.projections.state_dict(prefix="projections.")}
    tensors.update({f"frozen.{k}": v for k, v in frozen.items()})
    if learner.head is not None:
        tensors.update({f"head.{k}": v for k, v in learner.head.state_dict().items()})
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        digest.update(t.numpy().tobytes())
    digest.update(json.dumps(learner.classes).encode())
    digest.update(json.dumps(asdict(learner.config), sort_keys=True, default=str).encode())
    digest.update(f"|{learner.logit_scale!r}|{learner.strategy_name}".encode())
    return digest.hexdigest()


def _check_signature(graph: "onnxruntime.InferenceSession", path: str, classes: int) -> None:
    """Raises CompileError unless ``graph`` takes ``path``'s inputs and scores ``classes`` classes."""
    names = [i.name for i in graph.get_inputs()]
    if names != list(INPUTS[path]):
        raise CompileError(graph_file(path), f"takes inputs {names}, expected {list(INPUTS[path])}")
    width = graph.get_outputs()[0].shape[-1]
    expected = 2 * classes if path == "av" else classes  # av: [answer | joint path's own scores]
    if width != expected:
        raise CompileError(graph_file(path), f"scores {width} columns, expected {expected} for {classes} classes")


class CompiledVersion:
    """A learner's served forward as one ONNX Runtime session per modality path (module docstring)."""

    def __init__(self, learner: "Learner", graphs: dict[str, bytes], *, threads: int | None = None,
                 compile_seconds: float | None = None,
                 sessions: "dict[str, onnxruntime.InferenceSession] | None" = None) -> None:
        self.learner = learner
        self.graphs = graphs  # the ONNX bytes, kept by compile() for write(); load() keeps none
        self.threads = threads or max(1, torch.get_num_threads())
        self.compile_seconds = compile_seconds
        self.sessions = sessions or {path: session(data, self.threads) for path, data in graphs.items()}
        self.broken = ""  # why serving from the graphs failed once (the server then uses the learner)

    # -- building and files ---------------------------------------------------------------------------
    @classmethod
    def compile(cls, learner: "Learner", *, threads: int | None = None) -> "CompiledVersion":
        """Exports and checks ``learner``'s graphs. Raises CompileError (the reason in ``field``)."""
        started = time.perf_counter()
        graphs = export_graphs(learner)
        return cls(learner, graphs, threads=threads, compile_seconds=time.perf_counter() - started)

    def write(self, directory: Path) -> None:
        """Writes ``compiled.json`` and one ``compiled.<path>.onnx`` per path into ``directory``."""
        for path, data in self.graphs.items():
            write_synced(directory / graph_file(path), data)
        meta = {"format": FORMAT, "paths": sorted(self.graphs), "classes": self.learner.classes,
                "state_sha256": state_sha256(self.learner), "compile_seconds": self.compile_seconds,
                "inputs": {p: list(INPUTS[p]) for p in self.graphs},
                "graph_sha256": {p: hashlib.sha256(data).hexdigest() for p, data in self.graphs.items()}}
        write_synced(directory / META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())

    @staticmethod
    def present(directory: Path) -> bool:
        return (directory / META_FILE).is_file()

    @classmethod
    def load(cls, directory: Path, learner: "Learner", *, threads: int | None = None) -> "CompiledVersion":
        """The graphs in ``directory``, checked to come from ``learner``'s state. Raises CompileError."""
        try:
            meta: dict[str, Any] = json.loads((directory / META_FILE).read_text())
            paths = [str(p) for p in meta["paths"]]
            expected = str(meta["state_sha256"])
            fmt = meta["format"]
            checksums = {str(k): str(v) for k, v in dict(meta.get("graph_sha256", {})).items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CompileError(META_FILE, f"missing or unreadable: {exc}") from None
        if fmt != FORMAT:
            raise CompileError(f"{META_FILE}.format", f"format {fmt!r}, this build reads {FORMAT}")
        if any(p not in GRAPH_PATHS for p in paths):
            raise CompileError(f"{META_FILE}.paths", f"unknown path in {paths}")
        needed = sorted(served_paths(learner))
        if sorted(paths) != needed:
            raise CompileError(f"{META_FILE}.paths", f"lists {sorted(paths)}; the learner's head scores {needed}")
        if expected != state_sha256(learner):
            raise CompileError(f"{META_FILE}.state_sha256", "the graphs were compiled from another learner state")
        threads = threads or max(1, torch.get_num_threads())
        sessions = {}
        for p in paths:
            try:
                data = (directory / graph_file(p)).read_bytes()
            except OSError as exc:
                raise CompileError(graph_file(p), f"cannot read: {exc}") from None
            if hashlib.sha256(data).hexdigest() != checksums.get(p):
                raise CompileError(graph_file(p), "does not match its checksum in compiled.json")
            try:
                sessions[p] = session(data, threads)
            except Exception as exc:  # ONNX Runtime raises its own types for a damaged file
                raise CompileError(graph_file(p), f"cannot load: {type(exc).__name__}: {exc}") from None
            _check_signature(sessions[p], p, len(learner.classes))
        return cls(learner, {}, threads=threads, compile_seconds=meta.get("compile_seconds"), sessions=sessions)

    # -- serving -------------------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return self.learner.classes

    def predict(self, samples: Sequence["Sample"], top_k: int = 5) -> list[Prediction]:
        """Top-k classes for each sample, as :meth:`model.learner.Learner.predict` answers them."""
        check_top_k(top_k)
        batch = self.learner.encode_inputs(samples)
        scores, paths, unknown = self.scores(batch)
        return rank(scores, paths, unknown, self.classes, top_k, normalise=False)

    def scores(self, batch: "EncodedBatch") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(scores (B, K), path codes (B,), unknown (B,))`` of model-ready inputs, on the CPU."""
        head = self.learner.head
        assert head is not None  # compile() refuses learners without a statistics head
        n = len(batch)
        scores = torch.zeros(n, len(self.classes))
        codes = torch.zeros(n, dtype=torch.long)
        unknown = torch.zeros(n, dtype=torch.bool)
        has_image, has_audio = batch.has_image.cpu(), batch.has_audio.cpu()
        groups = {"av": has_image & has_audio, "visual": has_image & ~has_audio, "audio": has_audio & ~has_image}
        for path, mask in groups.items():
            rows = mask.nonzero().flatten()
            if not len(rows):
                continue
            k = len(self.classes)
            if path in self.sessions:
                s = self._run(path, batch, rows)
            else:  # a path the head has seen no example of scores 0 everywhere (StatisticsHead.scores)
                s = torch.zeros(len(rows), 2 * k if path == "av" else k)
            if path == "av":  # [answer | joint path's own scores]: a pair is judged unknown on the joint path
                s, joint = s[:, :k], s[:, k:]
                verdict = head.unknown(joint, "av") if "av" in head.weights else torch.zeros(len(rows), dtype=torch.bool)
            else:
                verdict = head.unknown(s, path)
            scores[rows], codes[rows], unknown[rows] = s, PATH_CODES[path], verdict
        return scores, codes, unknown

    def _run(self, path: str, batch: "EncodedBatch", rows: torch.Tensor) -> torch.Tensor:
        tensors = {"images": batch.images, "audio": batch.audio}
        out = []
        for start in range(0, len(rows), ENCODE_CHUNK):
            chunk = rows[start:start + ENCODE_CHUNK].to(batch.images.device)
            feeds = {name: np.ascontiguousarray(tensors[name][chunk].detach().cpu().numpy(), dtype=np.float32)
                     for name in INPUTS[path]}
            out.append(torch.from_numpy(self.sessions[path].run(None, feeds)[0]))
        return torch.cat(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Compiles the saved version in VERSION_DIR into ``--out``; exit 1 (reason on stderr) if it cannot."""
    from export.onnx import add_weights_argument, configure_logging, parse_weights
    from model.learner import Learner

    parser = argparse.ArgumentParser(prog="python -m export.compiled", description=main.__doc__)
    parser.add_argument("version_dir", type=Path, help="a saved version (learner.json and its tensors)")
    parser.add_argument("--out", required=True, type=Path, help="folder for compiled.json and the graphs")
    add_weights_argument(parser)
    add_child_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    apply_child_arguments(args, parser)
    try:
        learner = Learner.load(args.version_dir, weights=parse_weights(args.weights))
        compiled = CompiledVersion.compile(learner)
        args.out.mkdir(parents=True, exist_ok=True)
        compiled.write(args.out)
    except (CompileError, ValueError, OSError) as exc:  # CheckpointError is a ValueError
        print(f"cannot compile {args.version_dir}: {exc}", file=sys.stderr)
        return 1
    print(f"compiled {args.version_dir} into {len(compiled.graphs)} graphs in {compiled.compile_seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
