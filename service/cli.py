"""``mcil``: the command-line client of the daemon.

    mcil make-samples ./samples                       # synthetic images + WAVs of three classes
    mcil learn --class red --images ./samples/red/images --audio ./samples/red/audio \\
               --class green --images ./samples/green/images --audio ./samples/green/audio
    mcil learn --class clapping --video clap1.mp4 clap2.mp4 --per-clip 4
    mcil classify ./samples/test/red-0.png ./samples/test/red-0.wav
    mcil watch lesson.mp4 --out timeline.csv --out timeline.svg   # a timeline of what happened when
    mcil status | mcil versions | mcil rollback 1 | mcil job ID [--cancel]
    mcil report --out report.html                     # accuracy matrices and forgetting, as a picture
    mcil district identity | mcil district round ...  # share what rooms learned (docs/district.md)

Connection options (before or after the command): ``--target HOST:PORT`` (env ``MCIL_TARGET``,
default 127.0.0.1:50051), ``--token-file`` or env ``MCIL_TOKEN``, ``--ca``/``--cert``/``--key`` for
TLS. Options are never abbreviated (``--clas`` is an error, not ``--class``).
Exit status: 0 on success, 1 when the daemon refused or cannot be reached (its status code and message
are printed, with a hint), 2 for bad usage or a file that cannot be used.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from service.job_view import follow, phase_name, print_metrics, print_warnings, state_name
from service.upload_files import AUDIO_SUFFIXES, ClassOption, UsageError, examples_from_args, name_files
from video.clips import DEFAULT_PER_CLIP
from video.command import WatchError
from video.command import add_arguments as add_watch_arguments

if TYPE_CHECKING:
    from service.client import Client


class Refused(Exception):
    """The daemon refused a call; ``message`` is its reason, made readable (files named)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def version_number(text: str) -> int:
    """``rollback``'s argument: 0 (the untrained model) or a committed version number."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: versions are 0 (the untrained model) or a committed "
                                         "version number (see `mcil versions`)")
    return value


def _connect(args: argparse.Namespace) -> "Client":
    from service.client import Client, TLSOptions

    token = None
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
    elif os.environ.get("MCIL_TOKEN"):
        token = os.environ["MCIL_TOKEN"].strip()
    tls = None
    if args.ca or args.cert:
        tls = TLSOptions.from_files(args.ca, args.cert, args.key, args.server_name)
    return Client(args.target, token=token, tls=tls, timeout=args.timeout)


# -- commands ----------------------------------------------------------------------------------------


def cmd_classify(args: argparse.Namespace) -> int:
    from service.client import PATH_NAMES, sample_from_files

    image = audio = None
    for name in args.files:
        p = Path(name)
        if not p.is_file():
            raise UsageError(f"{name}: no such file")
        if p.suffix.lower() in AUDIO_SUFFIXES:
            if audio is not None:
                raise UsageError("give at most one audio file")
            audio = p
        else:
            if image is not None:
                raise UsageError("give at most one image file")
            image = p
    with _connect(args) as client:
        reply = client.classify([sample_from_files(image, audio)], top_k=args.top_k)
    result = reply.results[0]
    print(f"version {reply.model_version}, {PATH_NAMES.get(result.path, 'unknown')} path")
    if result.unknown:
        print("  unknown: unlike every class taught so far (the nearest are listed below)")
    for entry in result.classes:
        print(f"  {entry.score:6.3f}  {entry.name}")
    return 0


def cmd_learn(args: argparse.Namespace) -> int:
    import grpc
    from tqdm import tqdm

    from video.command import clip_seconds

    sources: list[str] = []
    with _connect(args) as client:
        videos = any("video" in spec for spec in args.classes or [])
        names, examples = examples_from_args(args, sources, clip_seconds(client) if videos else None)
        total_bytes = sum(e.ByteSize() for e in examples)
        with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="upload", disable=args.quiet) as bar:
            done = [0]

            def sent(_count: int, nbytes: int) -> None:
                bar.update(nbytes - done[0])
                done[0] = nbytes

            try:
                reply = client.learn(names, examples, request_id=args.request_id,
                                     held_out_fraction=args.held_out_fraction, expected_examples=len(examples),
                                     on_sent=sent)
            except grpc.RpcError as exc:
                raise Refused(exc.code().name, name_files(exc.details() or "", sources)) from None
        dup = " (already submitted earlier)" if reply.duplicate else ""
        print(f"job {reply.job_id}{dup}: {reply.train_examples} training and {reply.held_out_examples} "
              "held-out examples")
        if args.no_wait:
            return 0
        return follow(client, reply.job_id, args.quiet)


def cmd_watch(args: argparse.Namespace) -> int:
    from video.command import run

    with _connect(args) as client:
        return run(args, client)


def cmd_status(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        info = client.model_info()
    print(f"version {info.version}  preset {info.preset}  strategy {info.strategy}  runner {info.runner}"
          f"  device {info.device}")
    params = ", ".join(f"{k} {v:,}" for k, v in sorted(info.parameters.items()))
    print(f"parameters: {params}")
    for task in info.tasks:
        print(f"  task {task.index}: {', '.join(task.class_names)}  ({task.parameters:,} parameters)")
    if not info.tasks:
        print("  no classes learned yet")
    print(f"jobs waiting or running: {info.queued_jobs}" + (f" (running {info.running_job_id})"
                                                          if info.running_job_id else ""))
    if info.keeps_exemplars:
        print("note: this strategy keeps training exemplars in the state directory")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        reply = client.list_versions()
    if not reply.versions:
        print("no committed versions")
    for v in reply.versions:
        mark = "*" if v.current else " "
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.created_at))
        print(f"{mark} {v.version:4d}  {when}  {v.tasks} task(s): {', '.join(v.class_names)}")
        if args.verbose:
            print_metrics(v.metrics, indent="        ")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        info = client.rollback(args.version)
    classes = ", ".join(info.class_names) if info.class_names else "untrained, no classes"
    print(f"serving version {info.version}: {classes}")
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        if args.cancel:
            job = client.cancel_job(args.job_id)
            print(f"job {job.job_id}: {state_name(job.state)}")
            return 0
        if args.watch:
            return follow(client, args.job_id, quiet=False)
        job = client.get_job(args.job_id)
    print(f"job {job.job_id}: {state_name(job.state)} ({phase_name(job.phase)}), classes {', '.join(job.class_names)}")
    if job.message:
        print(f"  {job.message}")
    print_warnings(job)
    print_metrics(job.metrics)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from service.report import render_html, render_svg, version_rows

    out = Path(args.out)
    if out.suffix.lower() not in (".svg", ".html"):
        raise UsageError(f"--out {args.out}: give a .svg or .html file")
    with _connect(args) as client:
        versions = version_rows(client.list_versions())
    if not versions:
        raise UsageError("no committed versions yet: nothing to draw (teach a class first: mcil learn)")
    text = render_svg(versions) if out.suffix.lower() == ".svg" else render_html(versions, args.target)
    out.write_text(text)
    print(f"{out}: accuracy matrices and forgetting of {len(versions)} version(s)")
    return 0


def cmd_make_samples(args: argparse.Namespace) -> int:
    from service.sample_files import CLIP_CLASS, write_sample_set

    written = write_sample_set(Path(args.directory), per_class=args.per_class, seed=args.seed)
    for name, count in written.items():
        print(f"{args.directory}/{name}: {count} images and {count} WAVs")
    clips = len(list((Path(args.directory) / CLIP_CLASS / "clips").glob("*.mp4")))
    print(f"{args.directory}/{CLIP_CLASS}/clips: {clips} video clips of a fourth class for `mcil learn --video`")
    print(f"{args.directory}/test: one image+WAV pair per class for `mcil classify`, and lesson.mp4 "
          "(a minute of scenes) for `mcil watch`")
    return 0


# -- parser ------------------------------------------------------------------------------------------


def connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command shares. Given at the top level they carry defaults; repeated on each
    command (``defaults=False``) they override only when given, so they may come before or after it."""

    def d(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--target", default=d(os.environ.get("MCIL_TARGET", "127.0.0.1:50051")),
                        help="daemon address HOST:PORT (env MCIL_TARGET; default 127.0.0.1:50051)")
    parser.add_argument("--token-file", default=d(None), help="file holding the bearer token (else env MCIL_TOKEN)")
    parser.add_argument("--ca", default=d(None), help="PEM CA certificate to verify the daemon (enables TLS)")
    parser.add_argument("--cert", default=d(None), help="PEM client certificate (mutual TLS)")
    parser.add_argument("--key", default=d(None), help="PEM client private key (mutual TLS)")
    parser.add_argument("--server-name", default=d(None), help="name to check the daemon's certificate against")
    parser.add_argument("--timeout", type=float, default=d(120.0), help="seconds per call (default 120)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcil", description="Client of the continual-learning daemon.",
                                     allow_abbrev=False)
    connection_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    connection_options(common, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:  # noqa: A002 - argparse's own word
        return sub.add_parser(name, help=help, parents=[common], allow_abbrev=False)

    p = command("classify", "classify an image and/or a sound")
    p.add_argument("files", nargs="+", metavar="FILE", help="an image file and/or a WAV/FLAC file")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(run=cmd_classify)

    p = command("learn", "teach new classes from directories of examples and from video clips")
    p.add_argument("--class", dest="name", action=ClassOption, metavar="NAME", help="a new class (repeat)")
    p.add_argument("--images", action=ClassOption, metavar="DIR", help="image files of the class before it")
    p.add_argument("--audio", action=ClassOption, metavar="DIR", help="WAV/FLAC files of the class before it")
    p.add_argument("--video", action=ClassOption, nargs="+", metavar="FILE",
                   help="video clips of the class before it (mp4, mkv, webm, ...; see --per-clip)")
    p.add_argument("--per-clip", type=int, default=DEFAULT_PER_CLIP,
                   help=f"examples taken from each clip: pictures with the sound around them (default {DEFAULT_PER_CLIP})")
    p.add_argument("--held-out-fraction", type=float, default=0.0, help="default: the daemon's setting")
    p.add_argument("--request-id", help="idempotency key (default: random)")
    p.add_argument("--no-wait", action="store_true", help="return after the upload")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_learn, classes=None)

    p = command("watch", "classify a video, camera or stream every few seconds; write its timeline")
    add_watch_arguments(p)
    p.set_defaults(run=cmd_watch)

    p = command("status", "what the daemon serves")
    p.set_defaults(run=cmd_status)

    p = command("versions", "committed versions")
    p.add_argument("-v", "--verbose", action="store_true", help="with their figures")
    p.set_defaults(run=cmd_versions)

    p = command("rollback", "serve an earlier committed version")
    p.add_argument("version", type=version_number, help="a committed version (see `mcil versions`), or 0")
    p.set_defaults(run=cmd_rollback)

    p = command("job", "show, watch or cancel a training job")
    p.add_argument("job_id")
    p.add_argument("--watch", action="store_true")
    p.add_argument("--cancel", action="store_true")
    p.set_defaults(run=cmd_job)

    p = command("report", "draw the versions' accuracy matrices and forgetting (SVG or HTML)")
    p.add_argument("--out", required=True, metavar="FILE", help="report.svg or report.html")
    p.set_defaults(run=cmd_report)

    p = command("make-samples", "write a small synthetic sample set (images + WAVs)")
    p.add_argument("directory")
    p.add_argument("--per-class", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_make_samples)

    from district.cli import add_commands  # `mcil district identity | round` (docs/district.md)

    add_commands(command, _connect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (UsageError, WatchError, OSError) as exc:
        print(f"mcil: {exc}", file=sys.stderr)
        return 2
    except Refused as exc:
        print(f"mcil: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - gRPC errors: print the status, not a traceback
        import grpc

        if not isinstance(exc, grpc.RpcError):
            raise
        code = exc.code()
        print(f"mcil: {code.name}: {exc.details()}", file=sys.stderr)
        if code == grpc.StatusCode.UNAVAILABLE:
            print(f"mcil: cannot reach the daemon at {args.target}. Is it running? Start it with `mcild` "
                  "(README, quick start), or point --target / MCIL_TARGET at it.", file=sys.stderr)
        elif code == grpc.StatusCode.UNAUTHENTICATED:
            print("mcil: give the daemon's token: --token-file FILE or env MCIL_TOKEN.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
