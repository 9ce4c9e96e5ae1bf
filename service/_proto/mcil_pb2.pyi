from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]

class ModalityPath(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_PATH_UNSPECIFIED: _ClassVar[ModalityPath]
    MODALITY_PATH_AUDIO_VISUAL: _ClassVar[ModalityPath]
    MODALITY_PATH_VISUAL: _ClassVar[ModalityPath]
    MODALITY_PATH_AUDIO: _ClassVar[ModalityPath]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_REJECTED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class JobPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_PHASE_UNSPECIFIED: _ClassVar[JobPhase]
    JOB_PHASE_QUEUED: _ClassVar[JobPhase]
    JOB_PHASE_PREPARING: _ClassVar[JobPhase]
    JOB_PHASE_TRAINING: _ClassVar[JobPhase]
    JOB_PHASE_EVALUATING: _ClassVar[JobPhase]
    JOB_PHASE_COMMITTING: _ClassVar[JobPhase]
    JOB_PHASE_DONE: _ClassVar[JobPhase]
DTYPE_UNSPECIFIED: DType
DTYPE_UINT8: DType
DTYPE_FLOAT32: DType
MODALITY_PATH_UNSPECIFIED: ModalityPath
MODALITY_PATH_AUDIO_VISUAL: ModalityPath
MODALITY_PATH_VISUAL: ModalityPath
MODALITY_PATH_AUDIO: ModalityPath
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_REJECTED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_PHASE_UNSPECIFIED: JobPhase
JOB_PHASE_QUEUED: JobPhase
JOB_PHASE_PREPARING: JobPhase
JOB_PHASE_TRAINING: JobPhase
JOB_PHASE_EVALUATING: JobPhase
JOB_PHASE_COMMITTING: JobPhase
JOB_PHASE_DONE: JobPhase

class Tensor(_message.Message):
    __slots__ = ("shape", "dtype", "data", "sample_rate")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: DType
    data: bytes
    sample_rate: int
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[DType, str]] = ..., data: _Optional[bytes] = ..., sample_rate: _Optional[int] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("image_bytes", "image_tensor", "audio_bytes", "audio_tensor")
    IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_TENSOR_FIELD_NUMBER: _ClassVar[int]
    AUDIO_BYTES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_TENSOR_FIELD_NUMBER: _ClassVar[int]
    image_bytes: bytes
    image_tensor: Tensor
    audio_bytes: bytes
    audio_tensor: Tensor
    def __init__(self, image_bytes: _Optional[bytes] = ..., image_tensor: _Optional[_Union[Tensor, _Mapping]] = ..., audio_bytes: _Optional[bytes] = ..., audio_tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("samples", "top_k")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    top_k: int
    def __init__(self, samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., top_k: _Optional[int] = ...) -> None: ...

class ClassScore(_message.Message):
    __slots__ = ("name", "score")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    name: str
    score: float
    def __init__(self, name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("classes", "path", "unknown")
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    classes: _containers.RepeatedCompositeFieldContainer[ClassScore]
    path: ModalityPath
    unknown: bool
    def __init__(self, classes: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ..., path: _Optional[_Union[ModalityPath, str]] = ..., unknown: _Optional[bool] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results", "model_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    model_version: int
    def __init__(self, results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., model_version: _Optional[int] = ...) -> None: ...

class LearnHeader(_message.Message):
    __slots__ = ("request_id", "class_names", "held_out_fraction", "expected_examples")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    class_names: _containers.RepeatedScalarFieldContainer[str]
    held_out_fraction: float
    expected_examples: int
    def __init__(self, request_id: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ..., held_out_fraction: _Optional[float] = ..., expected_examples: _Optional[int] = ...) -> None: ...

class LabeledExample(_message.Message):
    __slots__ = ("label", "sample", "held_out")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_FIELD_NUMBER: _ClassVar[int]
    label: str
    sample: Sample
    held_out: bool
    def __init__(self, label: _Optional[str] = ..., sample: _Optional[_Union[Sample, _Mapping]] = ..., held_out: _Optional[bool] = ...) -> None: ...

class ExampleChunk(_message.Message):
    __slots__ = ("data", "last")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    last: bool
    def __init__(self, data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class LearnNewClassesRequest(_message.Message):
    __slots__ = ("header", "example", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: LearnHeader
    example: LabeledExample
    chunk: ExampleChunk
    def __init__(self, header: _Optional[_Union[LearnHeader, _Mapping]] = ..., example: _Optional[_Union[LabeledExample, _Mapping]] = ..., chunk: _Optional[_Union[ExampleChunk, _Mapping]] = ...) -> None: ...

class LearnNewClassesResponse(_message.Message):
    __slots__ = ("job_id", "duplicate", "train_examples", "held_out_examples")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    duplicate: bool
    train_examples: int
    held_out_examples: int
    def __init__(self, job_id: _Optional[str] = ..., duplicate: _Optional[bool] = ..., train_examples: _Optional[int] = ..., held_out_examples: _Optional[int] = ...) -> None: ...

class JobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class PathFigures(_message.Message):
    __slots__ = ("average_accuracy", "last_accuracy", "forgetting", "bwt", "fwt", "m1", "m2", "new_task_accuracy", "task_accuracy")
    AVERAGE_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LAST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    FORGETTING_FIELD_NUMBER: _ClassVar[int]
    BWT_FIELD_NUMBER: _ClassVar[int]
    FWT_FIELD_NUMBER: _ClassVar[int]
    M1_FIELD_NUMBER: _ClassVar[int]
    M2_FIELD_NUMBER: _ClassVar[int]
    NEW_TASK_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TASK_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    average_accuracy: float
    last_accuracy: float
    forgetting: float
    bwt: float
    fwt: float
    m1: float
    m2: float
    new_task_accuracy: float
    task_accuracy: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, average_accuracy: _Optional[float] = ..., last_accuracy: _Optional[float] = ..., forgetting: _Optional[float] = ..., bwt: _Optional[float] = ..., fwt: _Optional[float] = ..., m1: _Optional[float] = ..., m2: _Optional[float] = ..., new_task_accuracy: _Optional[float] = ..., task_accuracy: _Optional[_Iterable[float]] = ...) -> None: ...

class JobMetrics(_message.Message):
    __slots__ = ("paths", "tasks", "held_out_per_task")
    class PathsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: PathFigures
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[PathFigures, _Mapping]] = ...) -> None: ...
    PATHS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_PER_TASK_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.MessageMap[str, PathFigures]
    tasks: int
    held_out_per_task: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, paths: _Optional[_Mapping[str, PathFigures]] = ..., tasks: _Optional[int] = ..., held_out_per_task: _Optional[_Iterable[int]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "request_id", "state", "phase", "class_names", "epoch", "epochs", "step", "steps", "loss", "eta_seconds", "base_version", "committed_version", "metrics", "message", "created_at", "started_at", "finished_at", "train_examples", "held_out_examples", "warnings")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    request_id: str
    state: JobState
    phase: JobPhase
    class_names: _containers.RepeatedScalarFieldContainer[str]
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    eta_seconds: float
    base_version: int
    committed_version: int
    metrics: JobMetrics
    message: str
    created_at: float
    started_at: float
    finished_at: float
    train_examples: int
    held_out_examples: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., request_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., phase: _Optional[_Union[JobPhase, str]] = ..., class_names: _Optional[_Iterable[str]] = ..., epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., step: _Optional[int] = ..., steps: _Optional[int] = ..., loss: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., base_version: _Optional[int] = ..., committed_version: _Optional[int] = ..., metrics: _Optional[_Union[JobMetrics, _Mapping]] = ..., message: _Optional[str] = ..., created_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., train_examples: _Optional[int] = ..., held_out_examples: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ListClassesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListClassesResponse(_message.Message):
    __slots__ = ("class_names", "model_version")
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    class_names: _containers.RepeatedScalarFieldContainer[str]
    model_version: int
    def __init__(self, class_names: _Optional[_Iterable[str]] = ..., model_version: _Optional[int] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("index", "class_names", "parameters")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    index: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    parameters: int
    def __init__(self, index: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., parameters: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("preset", "strategy", "version", "tasks", "parameters", "runner", "keeps_exemplars", "queued_jobs", "running_job_id", "device", "audio_clip_seconds")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PRESET_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RUNNER_FIELD_NUMBER: _ClassVar[int]
    KEEPS_EXEMPLARS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CLIP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    preset: str
    strategy: str
    version: int
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    parameters: _containers.ScalarMap[str, int]
    runner: str
    keeps_exemplars: bool
    queued_jobs: int
    running_job_id: str
    device: str
    audio_clip_seconds: float
    def __init__(self, preset: _Optional[str] = ..., strategy: _Optional[str] = ..., version: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ..., parameters: _Optional[_Mapping[str, int]] = ..., runner: _Optional[str] = ..., keeps_exemplars: _Optional[bool] = ..., queued_jobs: _Optional[int] = ..., running_job_id: _Optional[str] = ..., device: _Optional[str] = ..., audio_clip_seconds: _Optional[float] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("version", "created_at", "class_names", "tasks", "job_id", "current", "metrics")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    version: int
    created_at: float
    class_names: _containers.RepeatedScalarFieldContainer[str]
    tasks: int
    job_id: str
    current: bool
    metrics: JobMetrics
    def __init__(self, version: _Optional[int] = ..., created_at: _Optional[float] = ..., class_names: _Optional[_Iterable[str]] = ..., tasks: _Optional[int] = ..., job_id: _Optional[str] = ..., current: _Optional[bool] = ..., metrics: _Optional[_Union[JobMetrics, _Mapping]] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions", "current_version")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[VersionInfo]
    current_version: int
    def __init__(self, versions: _Optional[_Iterable[_Union[VersionInfo, _Mapping]]] = ..., current_version: _Optional[int] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class RoomStatisticsRequest(_message.Message):
    __slots__ = ("known_digest",)
    KNOWN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    known_digest: str
    def __init__(self, known_digest: _Optional[str] = ...) -> None: ...

class StatisticsHeader(_message.Message):
    __slots__ = ("identity", "digest", "unchanged", "class_names", "size_bytes", "round", "rooms")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    identity: str
    digest: str
    unchanged: bool
    class_names: _containers.RepeatedScalarFieldContainer[str]
    size_bytes: int
    round: int
    rooms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, identity: _Optional[str] = ..., digest: _Optional[str] = ..., unchanged: _Optional[bool] = ..., class_names: _Optional[_Iterable[str]] = ..., size_bytes: _Optional[int] = ..., round: _Optional[int] = ..., rooms: _Optional[_Iterable[str]] = ...) -> None: ...

class StatisticsPart(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: StatisticsHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[StatisticsHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...
