"""The typed declaration of a preset: every section, every field, every default, declared once.

A preset file is validated by `Preset.model_validate(table, context={"source": path})` (see `files.py`):
unknown keys are refused (`extra="forbid"`), types are strict (no `"2"` for a number, no `true` for an
integer), a single value stands for a list of one, and the rules that tie fields together (open loop needs
rates, an image is [height, width], ...) raise `rule(...)` errors that `errors.PresetError` turns into one
line. Every other module (the plan, the load generator, the runtimes, the Setup screen, `--set`) reads the
defaults from here and declares none of its own.

A field's `description` is its help, shown after what is allowed; `json_schema_extra={"allowed": ...}`
replaces the generated "what is allowed" text where the type alone cannot say it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)

from tui_profiler.config import hubs
from tui_profiler.config.request import FIELD_PATH, RequestConfig
from tui_profiler.config.types import Integral, OneOrMany, Section, StringTable, Threads, rule
from tui_profiler.stats import STOP_METRICS

# -------------------------------------------------------------------------------------------- vocabulary

InputKind = Literal["image", "tokens", "tensor", "text", "body"]
Encoding = Literal["raw", "png", "jpeg", "json", "base64", "json-instances", "text"]
DType = Literal["float32", "float16", "float64", "uint8", "int64", "int32"]
KINDS: tuple[str, ...] = get_args(InputKind)
ENCODINGS: tuple[str, ...] = get_args(Encoding)
DTYPES: tuple[str, ...] = get_args(DType)
# Inputs sized by a token count (token_lens); the others are sized by a scale of base_size.
TOKEN_KINDS: tuple[str, ...] = ("tokens", "text")
# Which encodings each kind can travel in, its default first (an image can be any; text only as text or JSON).
ALLOWED_ENCODINGS: dict[str, tuple[Encoding, ...]] = {
    "image": ("raw", "png", "jpeg", "json", "base64", "json-instances"),
    "tensor": ("raw", "json", "base64", "json-instances"),
    "tokens": ("raw", "json", "base64", "json-instances", "text"),
    "text": ("text", "json"),
    "body": ("raw",),  # a body file is sent byte for byte
}
InputOrder = Literal["sequential", "random"]
# The kinds a user's own files can be (`input.files` / `input.folder`), and the one of them that a folder
# cannot hold (one text file already holds many prompts).
SOURCE_KINDS: tuple[str, ...] = ("image", "text", "body")
LoadMode = Literal["closed", "open"]
LoadSearch = Literal["slo"]  # load.search: the largest load that meets [slo] (sweep.search)
Arrival = Literal["constant", "poisson"]
Transport = Literal["auto", "raw", "aiohttp"]
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
NAME_ALLOWED = "letters, digits, '_', '-', '.'"


def sized_by_tokens(kind: str) -> bool:
    """The one answer to "is this input sized by token lengths?" (else by scales)."""
    return kind in TOKEN_KINDS


# ------------------------------------------------------------------------------------------ sections


ReadinessKind = Literal["http", "request", "log", "tcp"]
READINESS_KINDS: tuple[str, ...] = get_args(ReadinessKind)
JsonScalar = str | int | float | bool


def _json_scalar(value: Any) -> Any:
    if value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError("json_value")  # refused before the union, so the error names the field alone
    return value


class ReadinessConfig(Section):
    """How to tell the server is ready: an HTTP path answering `status` (and, optionally, a JSON field with
    a value), the preset's own request passing its template's check, a log line, or a TCP connect."""

    kind: ReadinessKind = Field(
        default="http",
        description="'request': ready when the preset's own request (its smallest input) passes the "
        "template's check — for servers whose health answers before the model is loaded",
    )
    path: str = "/healthz"
    status: Annotated[int, Integral, Field(ge=100, le=599)] = 200
    # Servers whose health endpoint answers at once but says in its JSON whether the model is loaded.
    json_field: str | None = Field(
        default=None,
        pattern=FIELD_PATH.pattern,
        description="http: a dotted path that must be in the JSON answer (e.g. 'model_state')",
        json_schema_extra={"allowed": "a dotted path such as 'model_state' or 'models.0.state'"},
    )
    json_value: Annotated[JsonScalar | None, BeforeValidator(_json_scalar)] = Field(
        default=None,
        description="http: the value json_field must have (e.g. 'READY'); any value if not given",
        json_schema_extra={"allowed": "a string, number or boolean"},
    )
    log_pattern: str = ""
    timeout_s: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] = 600.0
    interval_s: Annotated[float, Field(gt=0, le=0.01, allow_inf_nan=False)] = Field(
        default=0.01, description="polling resolution (<= 10 ms)"
    )

    @model_validator(mode="after")
    def _rules(self) -> ReadinessConfig:
        if self.json_value is not None and not self.json_field:
            raise rule("json_value", self.json_value, "json_value needs json_field (the field to compare)")
        if self.json_field and self.kind != "http":
            raise rule(
                "json_field",
                self.json_field,
                "only for kind 'http' (kind 'request' checks the answer with request.check)",
            )
        if self.kind == "log" and not self.log_pattern:
            raise rule("log_pattern", self.log_pattern, "kind 'log' needs a regular expression to wait for")
        return self

    def json_matches(self, value: Any) -> bool:
        """Whether a JSON value found at json_field is the one asked for (true is not 1, 1 is 1.0)."""
        wanted = self.json_value
        if wanted is None:
            return True
        if isinstance(wanted, bool) or isinstance(value, bool):
            return isinstance(wanted, bool) and isinstance(value, bool) and wanted == value
        return bool(type(wanted) is type(value) or {type(wanted), type(value)} <= {int, float}) and (
            wanted == value
        )


class MetricsConfig(Section):
    """The target's Prometheus endpoint, scraped during every cell into server_metrics.csv
    (`sample.prometheus`)."""

    path: str = "/metrics"
    port: Annotated[int, Integral, Field(ge=1, le=65535)] | None = Field(
        default=None, description="the endpoint's port inside the target (default: the serving port)"
    )
    interval_s: Annotated[float, Field(ge=0.05, le=60, allow_inf_nan=False)] = 0.5
    include: Annotated[list[str], OneOrMany] = Field(
        default_factory=list, description="metric (family or sample) names to keep; empty: every metric"
    )

    @model_validator(mode="after")
    def _rules(self) -> MetricsConfig:
        if not self.path.startswith("/"):
            raise rule("path", self.path, "a path starting with '/', e.g. '/metrics'")
        return self


class TargetConfig(Section):
    """A serving container that is not our model server: a prebuilt image or one built from a Dockerfile."""

    image: str = ""
    dockerfile: str = ""
    context: str = ""
    build_args: StringTable = Field(default_factory=dict)
    port: Annotated[int, Integral, Field(ge=1, le=65535)] = 8000
    command: Annotated[list[str], OneOrMany, Field(min_length=1)] | None = (
        None  # None: the image's own command
    )
    env: StringTable = Field(default_factory=dict)
    mounts: Annotated[list[str], OneOrMany, Field(min_length=1)] = Field(
        default_factory=list, description="'HOST_PATH:CONTAINER_PATH' (mounted read-only)"
    )
    gpu_env: StringTable = Field(default_factory=dict)
    readiness: ReadinessConfig = Field(default_factory=ReadinessConfig)
    metrics: MetricsConfig | None = None  # the target's Prometheus endpoint, scraped during every cell

    @model_validator(mode="after")
    def _rules(self) -> TargetConfig:
        if self.image and self.dockerfile:
            raise rule("dockerfile", self.dockerfile, "give target.image or target.dockerfile, not both")
        for i, m in enumerate(self.mounts):
            host, sep, inside = m.partition(":")
            if not sep or not host or not inside.startswith("/"):
                raise rule(f"mounts[{i}]", m, "'HOST_PATH:/container/path'")
        return self

    def mount_pairs(self) -> list[tuple[str, str]]:
        return [(host, inside) for host, _, inside in (m.partition(":") for m in self.mounts)]


def _default_scales(data: dict[str, Any]) -> list[float]:
    kind = data.get("kind", "image")
    return [] if sized_by_tokens(kind) or kind == "body" else [1.0]


def _default_token_lens(data: dict[str, Any]) -> list[int]:
    return [16] if sized_by_tokens(data.get("kind", "image")) else []


def _default_encoding(data: dict[str, Any]) -> Encoding:
    # the first encoding the kind allows: raw bytes, or a text input's own text
    return ALLOWED_ENCODINGS[data.get("kind", "image")][0]


def _default_base_size(data: dict[str, Any]) -> list[int]:
    # for tokens and text, `_base_length_is_the_first_token_len` fills it in before validation
    kind = data.get("kind", "image")
    if kind == "body":
        return [1]  # unused: a body is its file
    return [16] if sized_by_tokens(kind) else [224, 224]


class InputConfig(Section):
    """What each request sends. Image and tensor inputs are sized by `scales` of `base_size`; tokens and
    text by `token_lens`."""

    kind: InputKind = "image"
    base_size: Annotated[
        list[Annotated[int, Integral, Field(ge=1, le=16384)]], OneOrMany, Field(min_length=1)
    ] = Field(
        default_factory=_default_base_size,
        description="[height, width] for images; the shape without batch for tensors",
    )
    scales: Annotated[
        list[Annotated[float, Field(gt=0, le=16, allow_inf_nan=False)]], OneOrMany, Field(min_length=1)
    ] = Field(default_factory=_default_scales)
    token_lens: Annotated[
        list[Annotated[int, Integral, Field(ge=1, le=1_000_000)]], OneOrMany, Field(min_length=1)
    ] = Field(default_factory=_default_token_lens)
    encoding: Encoding = Field(
        default_factory=_default_encoding,
        description="default: 'text' for a text input, else 'raw'",
    )
    dtype: DType = "float32"
    layout: Literal["chw", "hwc"] = "chw"
    channels: Annotated[int, Integral, Field(ge=1, le=64)] = 3
    batch_size: Annotated[int, Integral, Field(ge=1, le=4096)] = 1
    seed: Annotated[int, Integral, Field(ge=0, le=2**32 - 1)] = 0
    jpeg_quality: Annotated[int, Integral, Field(ge=1, le=100)] = 90
    vocab_size: Annotated[int, Integral, Field(ge=1001, le=10_000_000)] = 30522
    # users' own inputs (read, checked and prepared by load.sources)
    files: Annotated[list[str], OneOrMany, Field(min_length=1)] = Field(
        default_factory=list,
        description="the user's own input files (images, text/JSONL, request bodies); "
        "relative to the preset file",
    )
    folder: str = Field(default="", description="a folder of input files (every file in it, sorted by name)")
    order: InputOrder = Field(
        default="sequential", description="which input each request sends: in turn, or drawn with input.seed"
    )
    content_type: str = Field(
        default="", description="kind 'body': the Content-Type sent (default: guessed from the extension)"
    )
    max_prepared_mb: Annotated[float, Field(gt=0, le=1_048_576, allow_inf_nan=False)] = Field(
        default=1024.0, description="the most MiB the prepared inputs of one cell may take"
    )
    # generative models: the output length axis (the template's {output_len}; not set: the server's default)
    output_lens: Annotated[
        list[Annotated[int, Integral, Field(ge=1, le=1_000_000)]], OneOrMany, Field(min_length=1)
    ] = Field(
        default_factory=list,
        description="tokens to generate per request, one cell each (sent as {output_len}, with ignore_eos)",
    )
    # generative models: a common prefix ("system prompt") of this many tokens before each request's distinct
    # part, one cell each (load.inputs.prompt_pool); 0: every prompt distinct from its first token
    shared_prefix_tokens: Annotated[
        list[Annotated[int, Integral, Field(ge=0, le=1_000_000)]], OneOrMany, Field(min_length=1)
    ] = Field(
        default_factory=lambda: [0],
        description="tokens every prompt of a cell shares at its start, one cell each (below every token_len)",
    )

    @property
    def sized_by_tokens(self) -> bool:
        return sized_by_tokens(self.kind)

    @property
    def has_sources(self) -> bool:
        """The inputs are the user's own files (else synthetic)."""
        return bool(self.files or self.folder)

    @property
    def sized_by_plan(self) -> bool:
        """Whether the plan has an input-size axis: not for request bodies, nor for text sent as written."""
        return self.kind != "body" and not (self.kind == "text" and self.has_sources and not self.token_lens)

    @property
    def sizes(self) -> list[float] | list[int]:
        """The input sizes of the plan: token lengths or scales."""
        return self.token_lens if self.sized_by_tokens else self.scales

    @model_validator(mode="before")
    @classmethod
    def _base_length_is_the_first_token_len(cls, data: Any) -> Any:
        if isinstance(data, dict) and sized_by_tokens(str(data.get("kind"))) and "base_size" not in data:
            lens = data.get("token_lens")
            first = lens[0] if isinstance(lens, list) and lens else lens
            if isinstance(first, int) and not isinstance(first, bool) and first >= 1:
                return {**data, "base_size": [first]}
        return data

    @model_validator(mode="after")
    def _rules(self) -> InputConfig:
        given = self.model_fields_set
        self._source_rules(given)
        if self.kind == "text" and self.has_sources and "token_lens" not in given:
            self.__dict__["token_lens"] = []  # text from files is sent as written: no length is used
        if self.kind == "body":
            pass  # no size axis: the rules above refused scales and token_lens
        elif not self.sized_by_tokens:
            if "token_lens" in given:
                raise rule(
                    "token_lens",
                    self.token_lens,
                    f"only for input.kind 'tokens' or 'text' (use input.scales for '{self.kind}')",
                )
            if self.kind == "image" and len(self.base_size) != 2:
                raise rule("base_size", self.base_size, "[height, width] (two integers)")
        elif "scales" in given:
            raise rule(
                "scales",
                self.scales,
                f"only for input.kind 'image' or 'tensor' (use input.token_lens for '{self.kind}')",
            )
        if self.encoding not in ALLOWED_ENCODINGS[self.kind]:
            raise rule(
                "encoding",
                self.encoding,
                f"a {self.kind} input allows: {', '.join(ALLOWED_ENCODINGS[self.kind])}",
            )
        self._shared_prefix_rules(given)
        return self

    def _shared_prefix_rules(self, given: set[str]) -> None:
        """A shared prefix is for prompts (tokens, text) and leaves each prompt at least one token of its own."""
        prefixes = self.shared_prefix_tokens
        if "shared_prefix_tokens" not in given or prefixes == [0]:
            return
        if not self.sized_by_tokens:
            raise rule("shared_prefix_tokens", prefixes, "only for input.kind 'tokens' or 'text'")
        if self.token_lens and max(prefixes) >= min(self.token_lens):
            raise rule(
                "shared_prefix_tokens",
                prefixes,
                f"each must be below every input.token_lens (the shortest is {min(self.token_lens)})",
            )

    def _source_rules(self, given: set[str]) -> None:
        if self.files and self.folder:
            raise rule("folder", self.folder, "give input.files or input.folder, not both")
        if self.has_sources and self.kind not in SOURCE_KINDS:
            which = "files" if self.files else "folder"
            raise rule(
                which,
                self.files or self.folder,
                f"files hold images, text or request bodies: input.kind {', '.join(map(repr, SOURCE_KINDS))}",
            )
        if self.kind == "text" and self.folder:
            raise rule(
                "folder", self.folder, "text inputs come from files (one prompt a line): use input.files"
            )
        if self.kind == "body":
            if not self.has_sources:
                raise rule("kind", self.kind, "a body input needs input.files or input.folder")
            for name in ("scales", "token_lens", "encoding"):
                if name in given:
                    raise rule(name, getattr(self, name), "a body input is sent byte for byte: leave it out")
        elif "content_type" in given:
            raise rule("content_type", self.content_type, "only for input.kind 'body'")


class SloConfig(Section):
    """Service-level objectives of a generative server: a request meets them when it is answered and each
    one given holds. A cell's goodput is the requests per second that met every one."""

    ttft_s: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] | None = Field(
        default=None, description="time to first token, at most"
    )
    tpot_s: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] | None = Field(
        default=None, description="time per output token after the first, at most"
    )
    e2e_s: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] | None = Field(
        default=None, description="end-to-end latency, at most"
    )
    percentile: Annotated[float, Field(gt=0, lt=100, allow_inf_nan=False)] = Field(
        default=99.0, description="the percentile each objective bounds in a capacity search (load.search)"
    )

    @model_validator(mode="after")
    def _rules(self) -> SloConfig:
        if self.ttft_s is None and self.tpot_s is None and self.e2e_s is None:
            raise rule("ttft_s", None, "give at least one of slo.ttft_s, slo.tpot_s, slo.e2e_s")
        return self


def _uncapped() -> list[float | None]:
    return [None]


class ResourcesConfig(Section):
    """The caps of each container: CPU quota, memory, GPUs; how CPU and memory values pair up."""

    cpus: Annotated[
        list[Annotated[float, Field(gt=0, allow_inf_nan=False)] | None], OneOrMany, Field(min_length=1)
    ] = Field(default_factory=_uncapped)  # None: not capped
    memory_gb: Annotated[
        list[Annotated[float, Field(gt=0, allow_inf_nan=False)] | None], OneOrMany, Field(min_length=1)
    ] = Field(default_factory=_uncapped)
    gpus: Annotated[list[Annotated[int, Integral, Field(ge=0)]], OneOrMany, Field(min_length=1)] = Field(
        default_factory=lambda: [0]
    )
    cpuset: bool = False
    threads: Threads = Field(
        default="auto", description="a number of threads, 'auto' (the CPU quota) or 'host'"
    )
    pairing: Literal["grid", "zip"] = "grid"

    @model_validator(mode="after")
    def _rules(self) -> ResourcesConfig:
        n_cpus, n_mem = len(self.cpus), len(self.memory_gb)
        if self.pairing == "zip" and n_cpus != n_mem and 1 not in (n_cpus, n_mem):
            raise rule(
                "memory_gb",
                self.memory_gb,
                f"pairing 'zip' needs as many values as resources.cpus ({n_cpus}) or one",
            )
        return self


class StableCI(Section):
    """Stop a cell early once the 95% confidence interval's half-width of the mean latency is below
    `rel_halfwidth` of the mean, after at least `min_requests` timed successes."""

    rel_halfwidth: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = Field(
        default=0.05, description="stop when the 95% CI half-width / mean falls below this"
    )
    min_requests: Annotated[int, Integral, Field(ge=2)] = 10


class StopRule(Section):
    """`[load.stop]`: stop a cell once `metric`'s `confidence` interval is within `rel_halfwidth` of its
    estimate on either side (tui_profiler.stats.StopJudge), after at least `min_requests` answered timed
    requests; whatever happens, after `max_requests` timed requests or `max_duration_s` seconds. Several
    tables: every metric must be met, and the first cap reached ends the cell."""

    metric: str = Field(
        description="mean, p50, p90, p95, p99, or one of those of ttft_ / tpot_ (e.g. ttft_p99)"
    )
    rel_halfwidth: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = Field(
        default=0.05, description="stop when the interval's half-width / estimate falls below this"
    )
    confidence: Annotated[float, Field(ge=0.5, lt=1, allow_inf_nan=False)] = 0.95
    min_requests: Annotated[int, Integral, Field(ge=2, le=10_000_000)] = 20
    max_requests: Annotated[int, Integral, Field(ge=1, le=10_000_000)] | None = 5000
    max_duration_s: Annotated[float, Field(gt=0, le=7 * 86400, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _rules(self) -> StopRule:
        if self.metric not in STOP_METRICS:
            raise rule("metric", self.metric, f"one of {', '.join(STOP_METRICS)}")
        if self.max_requests is not None and self.max_requests < self.min_requests:
            raise rule("max_requests", self.max_requests, f"at least min_requests ({self.min_requests})")
        return self


class LoadConfig(Section):
    """The load of each cell: closed loop (N workers back to back) or open loop (arrivals at a rate)."""

    mode: LoadMode = "closed"
    concurrency: Annotated[
        list[Annotated[int, Integral, Field(ge=1, le=4096)]], OneOrMany, Field(min_length=1)
    ] = Field(default_factory=lambda: [1])
    rates: Annotated[
        list[Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)]], OneOrMany, Field(min_length=1)
    ] = Field(default_factory=list, description="requests per second")
    arrival: Arrival = "poisson"
    connections: Annotated[int, Integral, Field(ge=1, le=4096)] = Field(
        default=32, description="open loop: most requests in flight"
    )
    requests: Annotated[int, Integral, Field(ge=1, le=10_000_000)] | None = (
        20  # None: as many as fit in duration_s
    )
    duration_s: Annotated[float, Field(gt=0, le=7 * 86400, allow_inf_nan=False)] | None = None
    warmup: Annotated[int, Integral, Field(ge=0, le=100_000)] = 2
    timeout_s: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] = 60.0
    stable_ci: StableCI | None = None
    stop: Annotated[list[StopRule], OneOrMany, Field(min_length=1)] | None = Field(
        default=None, description="stop each cell once its intervals are narrow enough: a table or a list"
    )
    transport: Transport = Field(
        default="auto", description="'auto': the lean HTTP/1.1 client for http://, aiohttp for https://"
    )
    processes: Annotated[int, Integral, Field(ge=1, le=256)] = Field(
        default=1, description="closed loop: client processes sharing the workers"
    )
    drain_s: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] | None = Field(
        default=None, description="open loop: how long queued arrivals may still be sent after the schedule"
    )
    seed: Annotated[int, Integral, Field(ge=0, le=2**32 - 1)] = Field(
        default=0, description="open loop: the seed of the Poisson arrivals"
    )
    search: LoadSearch | None = Field(
        default=None,
        description="'slo': instead of the listed levels, find the largest load that meets [slo] "
        "(`run --find-max-load`); the first listed level is where the search starts",
    )
    per_request_cgroup: bool = Field(
        default=True,
        description="read the target's CPU counters at each request's start and end (requests.csv cpu_ms, "
        "throttled_ms); false for a pure latency run",
    )

    @property
    def levels(self) -> list[int] | list[float]:
        """The load levels of the plan: rates (open loop) or concurrency levels (closed loop)."""
        return self.rates if self.mode == "open" else self.concurrency

    @model_validator(mode="before")
    @classmethod
    def _duration_alone_means_no_count(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("duration_s" in data or "stop" in data) and "requests" not in data:
            return {**data, "requests": None}  # [load.stop]'s own caps bound the cell
        return data

    @model_validator(mode="after")
    def _rules(self) -> LoadConfig:
        given = self.model_fields_set
        if self.requests is not None and self.duration_s is not None:
            raise rule("duration_s", self.duration_s, "give load.requests or load.duration_s, not both")
        if self.mode == "open":
            if not self.rates:
                raise rule("rates", None, "load.mode = 'open' needs arrival rates (requests/s)")
            if "concurrency" in given:
                raise rule("concurrency", self.concurrency, "only for load.mode = 'closed' (use load.rates)")
            if self.processes > 1:
                raise rule("processes", self.processes, "several client processes serve the closed loop only")
        elif "rates" in given:
            raise rule("rates", self.rates, "only for load.mode = 'open' (use load.concurrency)")
        return self


# ----------------------------------------------------------------------------------------------- preset


# ---------------------------------------------------------------------------------------------- fleet

HostMeasure = Literal["auto", "in-process", "container"]
CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
# The local engine: a cell on it may run in this process (published port on 127.0.0.1, cgroup read here).
LOCAL_ENGINE_URLS: tuple[str, ...] = ("unix:///var/run/docker.sock", "unix:///run/docker.sock", "default")


class HostConfig(Section):
    """One test box of a fleet: a Docker engine reached the way Docker reaches it, and its settings."""

    url: str = Field(
        min_length=1,
        description="a Docker engine URL (unix://, tcp://, ssh://user@host) or a `docker context` name",
    )
    name: str = Field(default="", description="how cells.csv and the views name it (default: from url)")
    host_class: str = Field(default="", description="a hardware label to fit by, e.g. 'xeon-6248'")
    cpuset: str = Field(
        default="",
        description="confine this host's containers to these cores, e.g. '0-3' (default: all)",
        json_schema_extra={"allowed": "cores like '0-3' or '0,2,4'"},
    )
    tls_verify: bool = Field(default=False, description="tcp:// with TLS: verify the engine's certificate")
    cert_path: str = Field(
        default="", description="tcp:// with TLS: a folder with ca.pem, cert.pem, key.pem (DOCKER_CERT_PATH)"
    )
    measure: HostMeasure = Field(
        default="auto",
        description="where its load generator runs: 'container' (next to the target, in its network "
        "namespace), 'in-process' (here; the local engine only), 'auto' (in-process for the local engine)",
    )

    @model_validator(mode="after")
    def _rules(self) -> HostConfig:
        if self.cpuset and not CPUSET_RE.match(self.cpuset):
            raise rule("cpuset", self.cpuset, "cores like '0-3' or '0,2,4'")
        if self.name and not NAME_RE.match(self.name):
            raise rule("name", self.name, NAME_ALLOWED)
        if self.measure == "in-process" and not self.is_local_engine:
            raise rule(
                "measure", self.measure, "'container' or 'auto' for an engine that is not the local one"
            )
        return self

    @property
    def is_local_engine(self) -> bool:
        return self.url in LOCAL_ENGINE_URLS

    @property
    def in_process(self) -> bool:
        """Whether this host's cells run in this process (the local engine, unless told otherwise)."""
        return self.measure == "in-process" or (self.measure == "auto" and self.is_local_engine)

    @property
    def label(self) -> str:
        """The host's name: given, or the URL's host part ('10.213.0.2', 'box1'), or the context name."""
        if self.name:
            return self.name
        rest = self.url.split("://", 1)[-1]
        if self.url.startswith("unix://"):
            return "local" if self.is_local_engine else Path(rest).stem or rest
        rest = rest.rsplit("@", 1)[-1].split("/", 1)[0]
        return rest.rsplit(":", 1)[0] if self.url.startswith("tcp://") else rest


class FleetConfig(Section):
    """Several test boxes in one session: `[fleet]` in a preset, a fleet TOML file, or `run --hosts`."""

    hosts: Annotated[list[HostConfig], Field(min_length=1)]
    registry: str = Field(
        default="",
        description="send missing images through this registry (push here, pull there) instead of "
        "`docker save` -> `load`",
    )
    max_tries: Annotated[int, Integral, Field(ge=1, le=5)] = Field(
        default=2, description="tries of a resource configuration whose host drops before it is failed"
    )

    @model_validator(mode="after")
    def _rules(self) -> FleetConfig:
        seen: set[str] = set()
        for host in self.hosts:
            if host.label in seen:
                raise rule("hosts", host.url, f"a distinct name per host ({host.label!r} twice: set `name`)")
            seen.add(host.label)
        return self


PlanStrategy = Literal["grid", "adaptive"]
PlanGoal = Literal["model", "slo"]


class PlanConfig(Section):
    """How the grid is measured: all of it (`grid`), or an adaptive choice of its cells (`adaptive`,
    `tui_profiler.sweep.adaptive`) that stops at a target or a budget. A grid ignores the other keys, so
    `--set plan.strategy=grid` measures an adaptive preset's grid in full."""

    strategy: PlanStrategy = Field(default="grid", description="'grid': every cell; 'adaptive': chosen cells")
    goal: PlanGoal = Field(
        default="model",
        description="adaptive: a latency model of the whole grid ('model') or the cheapest configuration "
        "that meets [slo] ('slo')",
    )
    budget_cells: Annotated[int, Integral, Field(ge=1, le=1_000_000)] | None = Field(
        default=None, description="adaptive: measure at most this many cells"
    )
    budget_minutes: Annotated[float, Field(gt=0, le=7 * 24 * 60, allow_inf_nan=False)] | None = Field(
        default=None, description="adaptive: choose no new cell after this many minutes"
    )
    target_error: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = Field(
        default=10.0,
        description="adaptive, goal model: stop when the model's estimated median error over the grid is "
        "within this many percent",
    )
    slo_size: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None,
        description="adaptive, goal slo: the input size (a scale or token length of the grid) the answer is "
        "for (default: the largest)",
    )
    cost_per_gb: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)] = Field(
        default=0.25, description="adaptive, goal slo: a GiB of memory's cost, in CPU cores"
    )


class Preset(BaseModel):
    """A whole preset file. `name` defaults to the file's stem; `path` is where it was read from."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False)

    name: str = ""
    description: str = ""
    model: str = ""
    weights: Literal["random", "pretrained"] = "random"
    # hf: / tf: models: what the model does (config.hubs.TASKS); catalog models have their own
    task: str = ""
    image: str = ""  # server image tag; "" = the built-in model-server image
    server_args: Annotated[list[str], OneOrMany, Field(min_length=1)] = Field(
        default_factory=list, description="extra model-server flags, e.g. the hub entry's"
    )
    repetitions: Annotated[int, Integral, Field(ge=1, le=10_000)] = 1
    target: TargetConfig | None = None
    input: InputConfig = Field(default_factory=InputConfig)
    request: RequestConfig = Field(default_factory=RequestConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    load: LoadConfig = Field(default_factory=LoadConfig)
    slo: SloConfig | None = None  # generative models: goodput against these objectives
    fleet: FleetConfig | None = None  # several test boxes in one session (`run --hosts` overrides it)
    plan: PlanConfig = Field(default_factory=PlanConfig)  # the whole grid, or an adaptive choice of it

    _path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> Preset:
        source = str((info.context or {}).get("source", ""))
        if not self.name:
            self.name = Path(source).stem if source else ""
        if not NAME_RE.match(self.name):
            raise rule("name", self.name, NAME_ALLOWED)
        target = self.target
        # `run --url`: a running server, no container to start, so neither a model nor a [target] is needed
        for_url = bool((info.context or {}).get("for_url"))
        if not for_url and not self.model and not (target and (target.image or target.dockerfile)):
            raise rule("model", self.model, "a catalog model name, or a [target] with image or dockerfile")
        problem = self.request.model_name_problem(self.model)
        if problem is not None:
            raise rule(*problem)
        if self.load.search == "slo" and self.slo is None:
            raise rule("load.search", "slo", "a capacity search needs an [slo] (e2e_s, ttft_s or tpot_s)")
        task_problem = hubs.task_problem(self.model, self.task) if self.model else None
        if task_problem is not None:
            raise rule("task", self.task, task_problem)
        if (
            self.plan.strategy == "adaptive"
            and self.plan.goal == "slo"
            and (self.slo is None or self.slo.e2e_s is None)
        ):
            raise rule("plan.goal", "slo", "an adaptive plan with goal 'slo' needs [slo] e2e_s")
        if self.plan.strategy == "adaptive" and self.load.search is not None:
            raise rule("plan.strategy", "adaptive", "a capacity search (load.search) makes its own cells")
        return self

    @property
    def path(self) -> Path | None:
        return self._path

    @path.setter
    def path(self, value: Path | None) -> None:
        self._path = value

    @property
    def source(self) -> str:
        return str(self._path) if self._path else self.name

    def to_dict(self) -> dict[str, Any]:
        """The preset as the user wrote it (defaults left out, name included): TOML-able, for meta.json and
        `save_user_preset`; validating it again gives the same preset."""
        data = self.model_dump(exclude_unset=True, exclude_none=True, by_alias=True)
        data["name"] = self.name
        return data


# The defaults, for modules that need one without a preset (e.g. a load pattern built by hand).
LOAD_DEFAULTS = LoadConfig()
STABLE_CI_DEFAULTS = StableCI()
READINESS_DEFAULTS = ReadinessConfig()
INPUT_DEFAULTS = InputConfig()
