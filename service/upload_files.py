"""Directories of example files and clips -> upload messages, each checked here before anything is sent.

``mcil learn`` pairs the sorted image and sound files of each class, takes pictures and sound windows
from its video clips (video/clips.py), refuses (naming the file) what the daemon would refuse, and
keeps which file or clip moment each example came from, so that the daemon's
``examples[3].sample.audio_bytes: ...`` can be shown with its name.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from service._proto import mcil_pb2

AUDIO_SUFFIXES = (".wav", ".flac")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class UsageError(Exception):
    """Bad command-line use, or a file that cannot be used (exit status 2)."""


def files_in(directory: str | None, suffixes: Sequence[str]) -> list[Path]:
    if directory is None:
        return []
    path = Path(directory)
    if not path.is_dir():
        raise UsageError(f"{directory}: not a directory")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
    if not files:
        raise UsageError(f"{directory}: no {'/'.join(suffixes)} files")
    return files


def check_file(path: Path, min_audio_seconds: float = 0.1) -> None:
    """Refuse, naming the file, an image or sound the daemon would refuse (before anything is sent)."""
    if path.suffix.lower() in AUDIO_SUFFIXES:
        import soundfile

        try:
            info = soundfile.info(str(path))
        except (RuntimeError, soundfile.LibsndfileError) as exc:
            raise UsageError(f"{path}: not a WAV or FLAC file that can be read ({exc})") from None
        if info.frames == 0 or info.duration < min_audio_seconds:
            raise UsageError(f"{path}: the recording lasts {1000 * info.duration:.0f} ms; at least "
                             f"{1000 * min_audio_seconds:.0f} ms are needed (is the file cut short?)")
        return
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UsageError(f"{path}: not an image that can be read ({type(exc).__name__})") from None


def name_files(message: str, sources: Sequence[str]) -> str:
    """The daemon's ``examples[3].sample.audio_bytes: ...`` with the files of example 3 named."""
    import re

    def files(match: "re.Match[str]") -> str:
        index = int(match.group(1))
        return f"{match.group(0)} ({sources[index]})" if index < len(sources) else match.group(0)

    return re.sub(r"examples\[(\d+)\]", files, message)


class ClassOption(argparse.Action):
    """``--class NAME`` starts a class; the ``--images``, ``--audio`` and ``--video`` after it are its."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                  option_string: str | None = None) -> None:
        classes: list[dict[str, object]] = list(getattr(namespace, "classes", None) or [])
        if self.dest == "name":
            classes.append({"name": values})
        elif not classes:
            parser.error(f"{option_string}: give --class NAME before it")
        elif self.dest == "video":  # clips add up: --video a.mp4 --video b.mp4
            earlier = classes[-1].get("video") or []
            classes[-1] = {**classes[-1], "video": [*earlier, *values]}  # type: ignore[misc]
        elif self.dest in classes[-1]:
            parser.error(f"{option_string}: given twice for class {classes[-1]['name']}")
        else:
            classes[-1] = {**classes[-1], self.dest: values}
        namespace.classes = classes


def examples_from_args(args: argparse.Namespace, sources: list[str],
                       clip_seconds: float | None = None) -> tuple[list[str], list["mcil_pb2.LabeledExample"]]:
    """The upload's examples, class by class (``args.classes``, see :class:`ClassOption`); ``sources``
    receives the file(s) of each, in order. ``clip_seconds``: the sound around each picture taken
    from a video (the daemon's ``audio_clip_seconds``), needed when a class has ``--video``."""
    from service._proto import mcil_pb2
    from service.client import sample_from_arrays, sample_from_files

    classes: list[dict[str, object]] = getattr(args, "classes", None) or []
    if not classes:
        raise UsageError("give at least one --class NAME with --images DIR, --audio DIR and/or --video FILE...")
    examples = []
    sources.clear()
    for spec in classes:
        name = str(spec["name"])
        if not any(k in spec for k in ("images", "audio", "video")):
            raise UsageError(f"class {name}: give --images DIR, --audio DIR and/or --video FILE... after it")
        image_files = files_in(spec.get("images"), IMAGE_SUFFIXES)  # type: ignore[arg-type]
        audio_files = files_in(spec.get("audio"), AUDIO_SUFFIXES)  # type: ignore[arg-type]
        if image_files and audio_files and len(image_files) != len(audio_files):
            raise UsageError(f"class {name}: {len(image_files)} images but {len(audio_files)} audio files "
                             "(they are paired in sorted order)")
        count = max(len(image_files), len(audio_files))
        for j in range(count):
            image = image_files[j] if image_files else None
            audio = audio_files[j] if audio_files else None
            for path in (image, audio):
                if path is not None:
                    check_file(path)
            sample = sample_from_files(image, audio)
            examples.append(mcil_pb2.LabeledExample(label=name, sample=sample))
            sources.append(" + ".join(str(p) for p in (image, audio) if p is not None))
        for clip in spec.get("video") or []:  # type: ignore[attr-defined]
            from video.clips import examples_from_clip
            from video.source import SAMPLE_RATE, SourceError

            try:
                if clip_seconds is None:
                    raise ValueError("clip_seconds: needed to take examples from --video clips")
                taken = examples_from_clip(str(clip), args.per_clip, clip_seconds)
            except (SourceError, ValueError) as exc:
                raise UsageError(str(exc)) from None
            for example in taken:
                sample = sample_from_arrays(example.image, example.audio, SAMPLE_RATE)
                examples.append(mcil_pb2.LabeledExample(label=name, sample=sample))
                sources.append(example.source)
    return [str(spec["name"]) for spec in classes], examples
