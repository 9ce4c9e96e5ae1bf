"""The daemon's configuration: typed, frozen, validated at start-up with errors naming the field.

Sources, later ones winning (read by :mod:`service.config_loader`): defaults, a config file (YAML,
JSON or TOML, by extension), ``MCIL_SECTION__FIELD`` environment variables, then command line flags.
The file mirrors these dataclasses (``server:``, ``batching:``, ``security:``, ...); the
main flags (``--listen``, ``--metrics-listen``, ``--state-dir``, ``--preset``) are shortcuts for
``server.*`` fields and any field can be set with ``--set section.field=value``. Unknown keys are errors.
docs/service.md lists every field.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.device import check_device_name
from model.errors import InvalidInputError
from service.errors import ConfigError
from serving.errors import PlacementError
from serving.sessions import Placement

RUNNERS = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime", "pytorch")
"""Runner kinds for the frozen backbone (export.runners.RUNNER_KINDS), fastest first."""


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mcil"


def parse_address(field_name: str, value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:50051`` for IPv6) -> (host, port); port 0 picks a free port."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(field_name, f"expected HOST:PORT, got {value!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(field_name, f"port must be an integer, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(field_name, f"port must be in [0, 65535], got {port}")
    return host, port


@dataclass(frozen=True)
class ServerConfig:
    """Where the daemon listens and keeps its state, and which model it serves."""

    listen: str = "127.0.0.1:50051"
    metrics_listen: str | None = "127.0.0.1:9464"  # None: no metrics endpoint
    state_dir: Path = field(default_factory=_default_state_dir)
    preset: str = "lite"
    strategy: str = "mcil"
    device: str = "auto"  # where the learner trains and serves: auto (a CUDA GPU if PyTorch sees one), cpu, cuda[:N]
    runner: str = "pytorch"  # where the frozen backbone runs (RUNNERS); others need export.runners
    runner_fallback: bool = True  # a runner that cannot run here falls back to the next in RUNNERS
    runner_precision: str = "fp32"  # fp32 | fp16 (fp16 for GPU runners)
    runner_artifacts_dir: Path | None = None  # exported ONNX/engine files; None: the export cache
    # Serve each committed version as ONNX Runtime graphs (export/compiled.py) when its strategy has a
    # statistics head and the learner is on the CPU; otherwise, or off, the hybrid path (runner above).
    compiled: bool = True
    # the base's graphs a version is served over: fp32 (the learner's own features), or int8, calibrated
    # once per base on the held-out examples kept here (export/int8.py): faster, answers close to the
    # learner's rather than equal (docs/export.md, "A base in int8")
    base_precision: str = "fp32"
    # where a base's graphs and the heads over it run: cpu, cuda[:N] (ONNX Runtime's CUDA provider) or
    # tensorrt[:N] (TensorRT engines through ONNX Runtime, cached beside the base; base_precision fp32 or
    # fp16); a GPU needs onnxruntime-gpu in place of onnxruntime (docs/export.md, "A base on the GPU")
    base_device: str = "cpu"
    # Classify from a process that never imports PyTorch, learning in a child (service/light.py): None
    # (the default) where the configuration allows (lite, a head-served strategy, learning on the CPU;
    # service/light_mode.py says when not, and the start-up log why), true: always (refused where it
    # cannot), false: one process learns and serves
    light: bool | None = None
    # when light: the learner child ends after this many seconds in which nothing needed it (no forwarded
    # call, no job; service/learner_idle.py) and starts again on the next call; None: it stays up.
    # Not used by a daemon that runs in one process.
    learner_idle_seconds: float | None = 120.0
    max_workers: int = 32  # gRPC threads; each open WatchJob stream or upload holds one
    max_open_streams: int = 24  # uploads + watches open at once; the other threads stay for Classify, health
    grace_seconds: float = 10.0
    log_level: str = "INFO"

    def base_placement(self, check: bool = False) -> Placement:
        """Where a base's graphs run (``base_device``, with ``base_precision`` for TensorRT engines);
        ``check``: also that this ONNX Runtime can run there (at start-up, not when a file is read)."""
        fp16 = self.base_precision == "fp16" and str(self.base_device).startswith("tensorrt")
        precision = "fp16" if fp16 else "fp32"  # fp16 elsewhere: refused by name in __post_init__
        try:
            placement = Placement.parse(self.base_device, "server.base_device", precision)
            if check:
                placement.check_available("server.base_device")
            return placement
        except PlacementError as exc:
            raise ConfigError(exc.field, exc.problem) from None

    def __post_init__(self) -> None:
        parse_address("server.listen", self.listen)
        if self.metrics_listen is not None:
            parse_address("server.metrics_listen", self.metrics_listen)
        if not self.preset:
            raise ConfigError("server.preset", "must not be empty")
        try:
            check_device_name(self.device, "server.device")
        except InvalidInputError as exc:
            raise ConfigError(exc.field, exc.problem) from None
        if self.runner not in RUNNERS:
            raise ConfigError("server.runner", f"must be one of {', '.join(RUNNERS)}, got {self.runner!r}")
        if self.runner_precision not in ("fp32", "fp16"):
            raise ConfigError("server.runner_precision", f"must be fp32 or fp16, got {self.runner_precision!r}")
        if self.base_precision not in ("fp32", "int8", "fp16"):
            raise ConfigError("server.base_precision", f"must be fp32, int8 or fp16, got {self.base_precision!r}")
        if self.base_precision != "fp32" and not self.compiled:
            raise ConfigError("server.base_precision", f"{self.base_precision} is the graphs of versions served over "
                              "their base, which needs server.compiled")
        placement = self.base_placement()
        if placement.on_gpu and not self.compiled:
            raise ConfigError("server.base_device", "a base on the GPU serves versions over their base, which needs "
                              "server.compiled")
        if self.base_precision == "int8" and placement.on_gpu:
            raise ConfigError("server.base_precision", "int8 is the image graph on the CPU; on a GPU use "
                              "server.base_device: tensorrt with fp16")
        if self.base_precision == "fp16" and placement.kind != "tensorrt":
            raise ConfigError("server.base_precision", f"fp16 is for TensorRT engines (server.base_device: tensorrt), "
                              f"not {self.base_device}")
        _at_least("server.max_workers", self.max_workers, 2)
        _at_least("server.max_open_streams", self.max_open_streams, 1)
        if self.max_open_streams >= self.max_workers:
            raise ConfigError("server.max_open_streams", f"must be below server.max_workers ({self.max_workers}) "
                              f"so that Classify and health keep a thread, got {self.max_open_streams}")
        _at_least("server.grace_seconds", self.grace_seconds, 0)
        if self.light not in (None, True, False):
            raise ConfigError("server.light", f"must be true, false or null (auto), got {self.light!r}")
        if self.learner_idle_seconds is not None:
            if isinstance(self.learner_idle_seconds, bool) or not (
                    isinstance(self.learner_idle_seconds, (int, float)) and self.learner_idle_seconds > 0):
                raise ConfigError("server.learner_idle_seconds", f"must be > 0 seconds, got {self.learner_idle_seconds!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("server.log_level", f"must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching of concurrent Classify calls."""

    enabled: bool = True
    max_batch_size: int = 32  # samples per model call
    # How long the first waiting request may wait for company. 0: a batch takes what queued while the
    # last one ran (lite, 2 cores: about the same throughput as 5 ms with 8 and 32 clients, and one
    # client's p50 20.8 ms instead of 29.0; docs/benchmarks.md, "Classify speed").
    max_delay_ms: float = 0.0
    max_queue: int = 1024  # requests waiting; more are refused with RESOURCE_EXHAUSTED
    workers: int = 1  # batches computed at the same time (more can help on many-core CPUs)

    def __post_init__(self) -> None:
        _at_least("batching.workers", self.workers, 1)
        _at_least("batching.max_batch_size", self.max_batch_size, 1)
        _at_least("batching.max_delay_ms", self.max_delay_ms, 0)
        _at_least("batching.max_queue", self.max_queue, 1)


@dataclass(frozen=True)
class SecurityConfig:
    """TLS, mutual TLS and bearer tokens. Tokens come from a file or an environment variable."""

    tls_cert: Path | None = None  # PEM certificate chain of the server
    tls_key: Path | None = None  # PEM private key of the server
    tls_client_ca: Path | None = None  # set: clients must present a certificate signed by this CA (mTLS)
    token_file: Path | None = None  # admin token: every call, including mutating ones
    token_env: str | None = None  # ... or the name of an environment variable holding it
    read_token_file: Path | None = None  # optional read-only token (non-mutating calls)
    read_token_env: str | None = None
    require_token_for_all: bool = False  # also require a token for read-only calls

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("security.tls_cert", "tls_cert and tls_key must be set together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("security.tls_client_ca", "mutual TLS needs tls_cert and tls_key too")
        for name in ("tls_cert", "tls_key", "tls_client_ca", "token_file", "read_token_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"security.{name}", f"file {str(path)!r} does not exist")
        if self.token_file is not None and self.token_env is not None:
            raise ConfigError("security.token_env", "set token_file or token_env, not both")
        if self.require_token_for_all and not self.has_token:
            raise ConfigError("security.require_token_for_all", "needs token_file or token_env")

    @property
    def has_token(self) -> bool:
        return self.token_file is not None or self.token_env is not None


@dataclass(frozen=True)
class LimitsConfig:
    """Request size limits."""

    max_message_bytes: int = 4 * 1024 * 1024  # per gRPC message, both directions
    max_classify_samples: int = 256  # samples per Classify request
    max_upload_bytes: int = 1024 * 1024 * 1024  # per LearnNewClasses upload
    max_upload_examples: int = 50_000
    max_image_pixels: int = 4096 * 4096
    max_audio_seconds: float = 60.0
    min_audio_seconds: float = 0.1  # shorter recordings are refused (a file cut short, a click)
    upload_idle_seconds: float = 30.0  # an upload that sends nothing this long is ended

    def __post_init__(self) -> None:
        _at_least("limits.upload_idle_seconds", self.upload_idle_seconds, 0.1)
        _at_least("limits.max_message_bytes", self.max_message_bytes, 64 * 1024)
        _at_least("limits.max_classify_samples", self.max_classify_samples, 1)
        _at_least("limits.max_upload_bytes", self.max_upload_bytes, 1024)
        _at_least("limits.max_upload_examples", self.max_upload_examples, 2)
        _at_least("limits.max_image_pixels", self.max_image_pixels, 1)
        _at_least("limits.max_audio_seconds", self.max_audio_seconds, 0.1)
        _at_least("limits.min_audio_seconds", self.min_audio_seconds, 0.0)
        if self.min_audio_seconds >= self.max_audio_seconds:
            raise ConfigError("limits.min_audio_seconds", f"must be below limits.max_audio_seconds "
                              f"({self.max_audio_seconds:g}), got {self.min_audio_seconds:g}")


@dataclass(frozen=True)
class LearningConfig:
    """How uploads become training jobs."""

    min_examples_per_class: int = 10  # training + held-out examples
    held_out_fraction: float = 0.2  # used when an upload marks no example as held out
    max_queued_jobs: int = 2  # jobs waiting behind the running one; more -> RESOURCE_EXHAUSTED
    max_classes_per_task: int = 100
    seed: int = 0
    # Overrides of the learner's training configuration for a new state directory (None: preset default).
    epochs: int | None = None
    min_steps: int | None = None  # a small upload trains for more epochs until it gets this many steps
    batch_size: int | None = None
    learning_rate: float | None = None

    def __post_init__(self) -> None:
        _at_least("learning.min_examples_per_class", self.min_examples_per_class, 2)
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ConfigError("learning.held_out_fraction", f"must be in (0, 1), got {self.held_out_fraction}")
        _at_least("learning.max_queued_jobs", self.max_queued_jobs, 0)
        _at_least("learning.max_classes_per_task", self.max_classes_per_task, 1)
        if self.epochs is not None:
            _at_least("learning.epochs", self.epochs, 1)
        if self.min_steps is not None:
            _at_least("learning.min_steps", self.min_steps, 0)
        if self.batch_size is not None:
            _at_least("learning.batch_size", self.batch_size, 1)
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError("learning.learning_rate", f"must be > 0, got {self.learning_rate}")


@dataclass(frozen=True)
class GateConfig:
    """The commit gate: a trained job that misses a bound ends ``rejected`` and is not served. On by
    default: a job that makes the served model forget more than 10 points of what it knew (an upload
    with swapped labels, a class that overwrites another) is not committed. ``null`` turns a bound off."""

    max_forgetting: float | None = 10.0  # percentage points (F_T on ``path``)
    min_new_task_accuracy: float | None = None  # percent, on the new task's held-out examples
    min_last_accuracy: float | None = None  # percent, A_T pooled over every task
    path: str = "av"  # modality path the bounds apply to: av, visual or audio

    def __post_init__(self) -> None:
        for name in ("max_forgetting", "min_new_task_accuracy", "min_last_accuracy"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 100.0:
                raise ConfigError(f"gate.{name}", f"must be in [0, 100] percent, got {value}")
        if self.path not in ("av", "visual", "audio"):
            raise ConfigError("gate.path", f"must be av, visual or audio, got {self.path!r}")


@dataclass(frozen=True)
class MonitoringConfig:
    """What the alerts compare against (published as metrics, so one alert rule fits every deployment)."""

    classify_p99_seconds: float = 2.0  # CPU-sized; a GPU host promises less (e.g. 0.5)

    def __post_init__(self) -> None:
        if not self.classify_p99_seconds > 0:
            raise ConfigError("monitoring.classify_p99_seconds", f"must be > 0, got {self.classify_p99_seconds}")


@dataclass(frozen=True)
class RetentionConfig:
    """What the state directory keeps (docs/service.md, "Retention and privacy")."""

    max_versions: int = 20  # older committed versions are deleted (never the served one)
    held_out_per_class: int = 100  # at most this many held-out examples per class are stored

    def __post_init__(self) -> None:
        _at_least("retention.max_versions", self.max_versions, 1)
        _at_least("retention.held_out_per_class", self.held_out_per_class, 1)


@dataclass(frozen=True)
class WeightsConfig:
    """Weight files for presets whose weights do not ship with the package (``audioclip``)."""

    clip: Path | None = None  # official CLIP ViT-B/16 checkpoint
    audioclip: Path | None = None  # AudioCLIP checkpoint (ESResNeXt-fbsp audio head)
    audio_projection: Path | None = None  # optional P (512 x 1024)

    def __post_init__(self) -> None:
        for name in ("clip", "audioclip", "audio_projection"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"weights.{name}", f"file {str(path)!r} does not exist")


@dataclass(frozen=True)
class ServiceConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    learning: LearningConfig = field(default_factory=LearningConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)

    def replace(self, section: str, **changes: Any) -> "ServiceConfig":
        """A copy with some fields of one section changed (validated again)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **changes)})


def _at_least(name: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(name, f"must be >= {low}, got {value}")
