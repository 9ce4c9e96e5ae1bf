"""Directories of example files -> upload messages, each file checked here before anything is sent.

``mcil learn`` pairs the sorted image and sound files of each class, refuses (naming the file) what the
daemon would refuse, and keeps which file(s) each example came from, so that the daemon's
``examples[3].sample.audio_bytes: ...`` can be shown with the file's name.
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


def examples_from_dirs(args: argparse.Namespace, sources: list[str]) -> tuple[list[str], list["mcil_pb2.LabeledExample"]]:
    """The upload's examples; ``sources`` receives the file(s) of each, in order."""
    from service._proto import mcil_pb2
    from service.client import sample_from_files

    names: list[str] = args.class_names or []
    images: list[str | None] = args.images or []
    audios: list[str | None] = args.audio or []
    if not names:
        raise UsageError("give at least one --class NAME with --images DIR and/or --audio DIR")
    if len(images) not in (0, len(names)) or len(audios) not in (0, len(names)):
        raise UsageError("give --images and/or --audio once per --class, in the same order")
    examples = []
    sources.clear()
    for i, name in enumerate(names):
        image_files = files_in(images[i] if images else None, IMAGE_SUFFIXES)
        audio_files = files_in(audios[i] if audios else None, AUDIO_SUFFIXES)
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
    return names, examples
