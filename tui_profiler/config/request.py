"""The `[request]` section: which request template talks to the server, and what may be changed in it.

A request template says which method and path to call, which headers and content type to send, how the
body is built from the cell's input, and what a good answer looks like. The built-in templates are
declared here as data (`BUILTIN_TEMPLATES`); `load/template.py` renders them for a cell's input.

```toml
[request]
template = "tfserving"        # a built-in name (default "tui-profiler"), or a table with the fields below
model_name = "resnet"         # fills {model} and {name}; a catalog preset's model name by default
# Any template field may also be given here; it overrides the built-in's:
method = "POST"               # GET | POST | PUT | PATCH | DELETE
path = "/v1/models/{name}:predict"
headers = { Authorization = "Bearer token" }   # values may use placeholders
content_type = "application/json"              # default: the input encoding's (or JSON for body "json")
body = "json"                 # "input": the encoded input as is (JSON-family encodings are wrapped in `json`
                              #          when a `json` document is given);
                              # "json": the `json` document, placeholders filled; "none": no body
json = { instances = "{input}" }               # the JSON document (any nesting)
server_timing = true          # read the Server-Timing header when the server sends one
stream = "auto"               # how answers are read: "auto" (by Content-Type: text/event-stream is SSE,
                              # application/x-ndjson or jsonl is NDJSON), "sse", "ndjson", "none"
generative = false            # the answer carries generated tokens (token columns for a whole JSON answer too)
vars = { input_name = "INPUT__0" }             # your own placeholders (scalars), e.g. for kserve-v2

[request.check]               # the response check, applied to every timed request
status = 200                  # an int or a list of ints (100–599)
json_field = "predictions"    # optional: a dotted path that must exist in the JSON answer ("outputs.0.data")
every = 1                     # check the JSON field on every N-th response (1 = all; status: always)
```
A `template` table takes the same keys plus `base = "<built-in>"` to start from one.

Placeholders (`{name}`; write `{{` and `}}` for literal braces): `model`, `name` (both the model name),
`input` (the encoded input: a nested list, a base64 string or the text), `flat` (the data as a flat list),
`shape` (a list of ints), `shape_csv` ("1,3,224,224"), `dtype` ("float32"), `datatype` (KServe's "FP32",
"INT64", "UINT8", "BYTES"), `batch`, `pixels`, `token_len`, `input_field` ("tensor", "tokens" or "text":
our server's JSON key), `output_len` (the cell's output length, `[input] output_lens`), `ignore_eos` (true
when the cell asks for a fixed output length), and every key of `vars`. A JSON member whose value is exactly
`{output_len}` or `{ignore_eos}` is left out when the cell has no output length (the server's default). A JSON string that is exactly one placeholder is replaced
by the value itself (a list stays a list); inside longer strings, and in the path and headers, only scalar
placeholders are allowed.
"""

from __future__ import annotations

import copy
import json
import re
import string
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Discriminator, Field, Tag, field_validator, model_validator

from tui_profiler.config.types import Integral, OneOrMany, Section, rule

BODY_KINDS = ("input", "json", "none")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Placeholders that stand for a whole value (allowed only as an entire JSON string).
VALUE_PLACEHOLDERS = frozenset({"input", "flat", "shape"})
# Generative requests: the cell's output length; a JSON member holding only one of these is left out
# when the cell has none (so the server's own default applies).
OPTIONAL_PLACEHOLDERS = frozenset({"output_len", "ignore_eos"})
SCALAR_PLACEHOLDERS = (
    frozenset(
        {"model", "name", "shape_csv", "dtype", "datatype", "batch", "pixels", "token_len", "input_field"}
    )
    | OPTIONAL_PLACEHOLDERS
)
STREAM_MODES = ("auto", "sse", "ndjson", "none")
BUILTIN_PLACEHOLDERS = VALUE_PLACEHOLDERS | SCALAR_PLACEHOLDERS
RESERVED_HEADERS = ("content-length", "host", "transfer-encoding", "connection")
FIELD_PATH = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")  # a dotted JSON field path
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ------------------------------------------------------------------------------------ resolved templates


def dotted_path(text: str | None) -> tuple[str | int, ...]:
    """'outputs.0.data' -> ('outputs', 0, 'data'): the parts of a JSON field path; integer parts index lists."""
    if not text:
        return ()
    return tuple(int(p) if p.isdigit() else p for p in text.split("."))


class NoSuchField(LookupError):
    """A dotted JSON path that the document does not have."""


def json_at(doc: Any, path: tuple[str | int, ...]) -> Any:
    """The value at `path` in a parsed JSON document; raises NoSuchField when any part is missing."""
    node = doc
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            raise NoSuchField(".".join(map(str, path))) from None
    return node


@dataclass(frozen=True, slots=True)
class ResponseCheck:
    status: tuple[int, ...] = (200,)
    json_field: str | None = None  # dotted path; integer parts index lists
    every: int = 1

    def field_path(self) -> tuple[str | int, ...]:
        return dotted_path(self.json_field)

    def failure(self, status: int, body: bytes) -> str | None:
        """Why one answer fails this check (status, then the JSON field), or None when it passes."""
        if status not in self.status:
            return self.status_failure(status)
        if self.json_field:
            return self.field_failure(body, self.field_path())
        return None

    def status_failure(self, status: int) -> str:
        """Why an answer with a status outside `status` fails (the caller tests membership)."""
        return f"HTTP {status} (expected {'/'.join(map(str, sorted(self.status)))})"

    def field_failure(self, body: bytes, path: tuple[str | int, ...]) -> str | None:
        """Why `body` lacks the JSON field (its parsed `path`, which a caller on a hot path keeps), or None."""
        try:
            json_at(json.loads(body), path)
        except ValueError:
            return "check: the answer is not JSON"
        except NoSuchField:
            return f"check: no field {self.json_field!r} in the answer"
        return None


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """A template with every field decided (a built-in, or one merged from a preset's `[request]`)."""

    name: str = "tui-profiler"
    method: str = "POST"
    path: str = "/predict"
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    body: str = "input"
    json: Any = None
    server_timing: bool = True
    vars: dict[str, Any] = field(default_factory=dict)
    check: ResponseCheck = field(default_factory=ResponseCheck)
    model_name: str = ""
    description: str = ""
    stream: str = "auto"  # how answers are read (STREAM_MODES; see load/stream.py)
    generative: bool = False  # answers carry generated tokens (the token columns)


def _openai_streamed(**request: Any) -> dict[str, Any]:
    """An OpenAI-compatible streamed request body: the model, `request` (the prompt or the messages), the
    cell's output length, and the usage in the last event."""
    return {
        "model": "{model}",
        **request,
        "max_tokens": "{output_len}",
        "ignore_eos": "{ignore_eos}",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


BUILTIN_TEMPLATES: dict[str, TemplateSpec] = {
    t.name: t
    for t in (
        TemplateSpec(
            name="tui-profiler",
            description='our model server: raw tensor bytes (or PNG/JPEG, or {"tensor": [...]}) to /predict',
            path="/predict",
            body="input",
            json={"{input_field}": "{input}"},
        ),
        TemplateSpec(
            name="tfserving",
            description='TensorFlow Serving REST: POST /v1/models/{name}:predict with {"instances": [...]}',
            path="/v1/models/{name}:predict",
            body="json",
            json={"instances": "{input}"},
            check=ResponseCheck(json_field="predictions"),
        ),
        TemplateSpec(
            name="torchserve",
            description="TorchServe inference API: POST /predictions/{name} with the encoded input (e.g. a JPEG)",
            path="/predictions/{name}",
            body="input",
        ),
        TemplateSpec(
            name="kserve-v2",
            description="KServe v2 / Triton: POST /v2/models/{name}/infer with inputs [{name, shape, datatype, data}]",
            path="/v2/models/{name}/infer",
            body="json",
            json={
                "inputs": [
                    {"name": "{input_name}", "shape": "{shape}", "datatype": "{datatype}", "data": "{flat}"}
                ]
            },
            vars={"input_name": "INPUT__0"},
            check=ResponseCheck(json_field="outputs"),
        ),
        TemplateSpec(
            name="tei",
            description='Hugging Face text-embeddings-inference: POST /embed with {"inputs": text}',
            path="/embed",
            body="json",
            json={"inputs": "{input}"},
        ),
        TemplateSpec(
            name="tgi",
            description='Hugging Face text-generation-inference: POST /generate with {"inputs": text, "parameters"}',
            path="/generate",
            body="json",
            json={"inputs": "{input}", "parameters": {"max_new_tokens": "{max_new_tokens}"}},
            vars={"max_new_tokens": 16},
            check=ResponseCheck(json_field="generated_text"),
            generative=True,
        ),
        TemplateSpec(
            name="tgi-stream",
            description="Hugging Face text-generation-inference, streamed: POST /generate_stream (SSE, one token an event)",
            path="/generate_stream",
            body="json",
            json={
                "inputs": "{input}",
                "parameters": {"max_new_tokens": "{output_len}", "details": True},
            },
            generative=True,
        ),
        TemplateSpec(
            name="openai-completions",
            description='OpenAI-compatible completions, streamed: POST /v1/completions {"model", "prompt", "stream": true}',
            path="/v1/completions",
            body="json",
            json=_openai_streamed(prompt="{input}"),
            generative=True,
        ),
        TemplateSpec(
            name="openai-chat",
            description='OpenAI-compatible chat completions, streamed: POST /v1/chat/completions {"model", "messages"}',
            path="/v1/chat/completions",
            body="json",
            json=_openai_streamed(messages=[{"role": "user", "content": "{input}"}]),
            generative=True,
        ),
        TemplateSpec(
            name="openai-embeddings",
            description='OpenAI-compatible embeddings: POST /v1/embeddings with {"model", "input"}',
            path="/v1/embeddings",
            body="json",
            json={"model": "{model}", "input": "{input}"},
            check=ResponseCheck(json_field="data"),
        ),
        # Real third-party stacks built in stacks/ (MLServer speaks kserve-v2 above).
        TemplateSpec(
            name="litserve",
            description='LitServe: POST /predict with {"input": ...} (e.g. a base64 JPEG); its LitAPI answers JSON',
            path="/predict",
            body="json",
            json={"input": "{input}"},
            check=ResponseCheck(json_field="output"),
        ),
    )
}
BuiltinName = Literal[
    "tui-profiler",
    "tfserving",
    "torchserve",
    "kserve-v2",
    "tei",
    "tgi",
    "openai-embeddings",
    # generative, streamed answers
    "tgi-stream",
    "openai-completions",
    "openai-chat",
    "litserve",  # real third-party stacks
]
DEFAULT_TEMPLATE: BuiltinName = "tui-profiler"
_BUILTIN_LIST = ", ".join(BUILTIN_TEMPLATES)


# ----------------------------------------------------------------------------------------- placeholders


def placeholder_names(text: str) -> list[str]:
    """The placeholder names in `text` (raises ValueError on a malformed one, e.g. a lone brace)."""
    names = []
    for _, fname, spec, conv in string.Formatter().parse(text):
        if fname is None:
            continue
        if spec or conv or not fname:
            raise ValueError(f"malformed placeholder in {text!r}")
        names.append(fname)
    return names


def _check_placeholders(key: str, text: str, known: set[str], *, scalar_only: bool) -> None:
    try:
        names = placeholder_names(text)
    except ValueError:
        raise rule(key, text, "a malformed placeholder (write {{ and }} for literal braces)") from None
    for name in names:
        if name not in known:
            raise rule(key, text, f"unknown placeholder {{{name}}}; known: {', '.join(sorted(known))}")
        whole = text == "{" + name + "}"
        if name in VALUE_PLACEHOLDERS and (scalar_only or not whole):
            raise rule(key, text, f"{{{name}}} is a whole value: use it alone as a JSON string")


def _check_json_doc(key: str, doc: Any, known: set[str]) -> None:
    if isinstance(doc, str):
        _check_placeholders(key, doc, known, scalar_only=False)
    elif isinstance(doc, dict):
        for k, v in doc.items():
            _check_placeholders(f"{key}.{k}", str(k), known, scalar_only=True)
            _check_json_doc(f"{key}.{k}", v, known)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            _check_json_doc(f"{key}.{i}", v, known)
    elif doc is not None and not isinstance(doc, int | float | bool):
        raise rule(key, doc, "JSON values only (tables, arrays, strings, numbers, booleans)")


def check_template(template: TemplateSpec, prefix: str = "") -> None:
    """Every placeholder known, the body kind coherent; raises a `rule` error naming the field."""
    known = set(BUILTIN_PLACEHOLDERS) | set(template.vars)
    _check_placeholders(prefix + "path", template.path, known, scalar_only=True)
    for k, v in template.headers.items():
        _check_placeholders(f"{prefix}headers.{k}", v, known, scalar_only=True)
    if template.body == "json" and template.json is None:
        raise rule(prefix + "json", None, "body = 'json' needs a json document")
    if template.json is not None:
        _check_json_doc(prefix + "json", template.json, known)
    if template.method == "GET" and template.body != "none":
        raise rule(prefix + "body", template.body, "a GET request has no body: set body = 'none'")


# ----------------------------------------------------------------------------------------- the sections


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class CheckConfig(Section):
    """Changes to the template's response check (a field not given keeps the template's)."""

    status: (
        Annotated[list[Annotated[int, Integral, Field(ge=100, le=599)]], OneOrMany, Field(min_length=1)]
        | None
    ) = Field(
        default=None,
        json_schema_extra={"allowed": "an HTTP status 100–599 or a list of them (a check that can match)"},
    )
    json_field: str | None = Field(
        default=None, json_schema_extra={"allowed": "a dotted path such as 'predictions' or 'outputs.0.data'"}
    )
    every: Annotated[int, Integral, Field(ge=1)] | None = None

    @field_validator("json_field")
    @classmethod
    def _dotted(cls, value: str | None) -> str | None:
        if value and not FIELD_PATH.match(value):
            raise ValueError("json_field")
        return value

    def applied_to(self, base: ResponseCheck) -> ResponseCheck:
        given = self.model_fields_set
        return ResponseCheck(
            status=tuple(self.status) if "status" in given and self.status else base.status,
            json_field=(self.json_field or None) if "json_field" in given else base.json_field,
            every=self.every if "every" in given and self.every is not None else base.every,
        )


class TemplateFields(Section):
    """The fields of a template that a preset may set (not given: the base template's)."""

    method: Annotated[Literal["GET", "POST", "PUT", "PATCH", "DELETE"], BeforeValidator(_upper)] | None = None
    path: str | None = Field(
        default=None, pattern=r"^/", json_schema_extra={"allowed": "a path starting with '/'"}
    )
    headers: dict[str, str] | None = Field(
        default=None, json_schema_extra={"allowed": "a table of header name = string value"}
    )
    content_type: str | None = Field(
        default=None, pattern="/", json_schema_extra={"allowed": "a media type such as 'application/json'"}
    )
    body: Literal["input", "json", "none"] | None = None
    json_doc: Any = Field(default=None, alias="json")
    server_timing: bool | None = None
    stream: Literal["auto", "sse", "ndjson", "none"] | None = None
    generative: bool | None = None
    vars: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"allowed": "a table of name = value"}
    )
    check: CheckConfig | None = None

    @field_validator("headers")
    @classmethod
    def _not_the_generators(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for k, v in (value or {}).items():
            if k.lower() in RESERVED_HEADERS:
                raise rule(k, v, "set by the load generator; remove it")
        return value

    @field_validator("vars")
    @classmethod
    def _new_scalars(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for k, v in (value or {}).items():
            if not _VAR_NAME.match(k) or k in BUILTIN_PLACEHOLDERS:
                raise rule(k, v, "a new identifier (not a built-in placeholder)")
            if not isinstance(v, str | int | float | bool):
                raise rule(k, v, "a string, number or boolean")
        return value

    def given(self) -> set[str]:
        return set(self.model_fields_set)

    def applied_to(self, base: TemplateSpec) -> TemplateSpec:
        """`base` with the fields given here (the response check aside: see `RequestConfig.merged`)."""
        given = self.model_fields_set
        changes: dict[str, Any] = {}
        for name in ("method", "path", "content_type", "body", "server_timing", "stream", "generative"):
            if name in given and getattr(self, name) is not None:
                changes[name] = getattr(self, name)
        if "headers" in given and self.headers is not None:
            changes["headers"] = dict(self.headers)
        if "json_doc" in given:
            changes["json"] = copy.deepcopy(self.json_doc)
        if "vars" in given and self.vars is not None:
            changes["vars"] = {**base.vars, **self.vars}
        return replace(base, **changes)


class TemplateTable(TemplateFields):
    """`template = { base = "...", ... }`: a built-in with changes, or a whole definition."""

    base: BuiltinName = Field(
        default=DEFAULT_TEMPLATE, json_schema_extra={"allowed": f"a built-in template: {_BUILTIN_LIST}"}
    )


def _template_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "name"
    if isinstance(value, dict | TemplateTable):
        return "table"
    return None


TemplateChoice = Annotated[
    Union[Annotated[BuiltinName, Tag("name")], Annotated[TemplateTable, Tag("table")]],  # noqa: UP007
    Discriminator(_template_kind),
]
TEMPLATE_TAGS = ("name", "table")


class RequestConfig(TemplateFields):
    """The `[request]` section (see the module docstring)."""

    template: TemplateChoice = Field(
        default=DEFAULT_TEMPLATE,
        json_schema_extra={"allowed": f"a built-in template: {_BUILTIN_LIST}, or a table"},
    )
    model_name: str = ""

    def _overrides(self) -> set[str]:
        return self.model_fields_set - {"template", "model_name"}

    def merged(self) -> TemplateSpec:
        """The template this section describes, without its model name (see `resolved`)."""
        raw = self.template
        overrides = self._overrides()
        if isinstance(raw, str):
            base, table = BUILTIN_TEMPLATES[raw], None
        else:
            base, table = BUILTIN_TEMPLATES[raw.base], raw
        spec = self.applied_to(table.applied_to(base) if table is not None else base)
        # The section's check fields win over the template table's, field by field.
        checks = [c for c in (table.check if table is not None else None, self.check) if c is not None]
        if checks:
            given: dict[str, Any] = {}
            for c in checks:
                given.update(c.model_dump(exclude_unset=True))
            spec = replace(spec, check=CheckConfig.model_validate(given).applied_to(base.check))
        customised = bool(overrides) or (table is not None and bool(table.given() - {"base"}))
        return replace(spec, name=f"{base.name}+custom" if customised else base.name)

    def resolved(self, default_model_name: str = "") -> TemplateSpec:
        """The template with its model name: this section's `model_name`, else the preset's model."""
        return replace(self.merged(), model_name=self.model_name or default_model_name)

    def model_name_problem(self, default_model_name: str) -> tuple[str, str, str] | None:
        """(field, value, allowed) when the template's path needs a model name and none is given."""
        spec = self.merged()
        name = self.model_name or default_model_name
        if not name and ("{name}" in spec.path or "{model}" in spec.path):
            return "request.model_name", name, f"the template's path {spec.path} needs a model name"
        return None

    @model_validator(mode="after")
    def _coherent(self) -> RequestConfig:
        prefix = "template." if not isinstance(self.template, str) and not self._overrides() else ""
        check_template(self.merged(), prefix)
        return self


def describe_templates() -> list[tuple[str, str]]:
    return [(t.name, t.description) for t in BUILTIN_TEMPLATES.values()]
