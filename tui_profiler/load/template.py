"""Request templates: how to talk to a serving container, ours or anyone's, through one request path.

A `RequestTemplate` says which method and path to call, which headers and content type to send, how the
body is built from the cell's input (see `tui_profiler.load.inputs`), and what a good answer looks like.
Our own model server is just the default template (`tui-profiler`); TensorFlow Serving, TorchServe, Triton
(KServe v2), Hugging Face TEI / TGI and OpenAI-compatible servers are built in too. Every template is
validated before any container starts; a problem is a `ValueError` with one line naming the field.

Preset schema (the `[request]` section, read by `parse_request_section(section, where)`)
----------------------------------------------------------------------------------------
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
vars = { input_name = "INPUT__0" }             # your own placeholders (scalars), e.g. for kserve-v2

[request.check]               # the response check, applied to every timed request
status = 200                  # an int or a list of ints (100–599)
json_field = "predictions"    # optional: a dotted path that must exist in the JSON answer ("outputs.0.data")
every = 1                     # check the JSON field on every N-th response (1 = all; status: always)
```
A `template` table takes the same keys plus `base = "<built-in>"` to start from one.

Placeholders (`{name}`; write `{{` and `}}` for literal braces): `model`, `name` (both the model name),
`input` (the encoded input: a nested list, a base64 string or the text — see inputs.py), `flat` (the data
as a flat list), `shape` (a list of ints), `shape_csv` ("1,3,224,224"), `dtype` ("float32"), `datatype`
(KServe's "FP32", "INT64", "UINT8", "BYTES"), `batch`, `pixels`, `token_len`, `input_field` ("tensor",
"tokens" or "text": our server's JSON key), and every key of `vars`. A JSON string that is exactly one
placeholder is replaced by the value itself (a list stays a list); inside longer strings, and in the path
and headers, only scalar placeholders are allowed.
"""

from __future__ import annotations

import copy
import json
import re
import string
import time
from dataclasses import dataclass, field, replace
from typing import Any

from tui_profiler.load.inputs import EncodedInput, Payload

BODY_KINDS = ("input", "json", "none")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Placeholders that stand for a whole value (allowed only as an entire JSON string).
VALUE_PLACEHOLDERS = frozenset({"input", "flat", "shape"})
SCALAR_PLACEHOLDERS = frozenset(
    {"model", "name", "shape_csv", "dtype", "datatype", "batch", "pixels", "token_len", "input_field"}
)
BUILTIN_PLACEHOLDERS = VALUE_PLACEHOLDERS | SCALAR_PLACEHOLDERS
TEMPLATE_KEYS = (
    "base",
    "method",
    "path",
    "headers",
    "content_type",
    "body",
    "json",
    "server_timing",
    "vars",
    "check",
)
CHECK_KEYS = ("status", "json_field", "every")
_KSERVE_DATATYPES = {
    "float32": "FP32",
    "float16": "FP16",
    "float64": "FP64",
    "uint8": "UINT8",
    "int64": "INT64",
    "int32": "INT32",
}
_FIELD_PATH = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class ResponseCheck:
    status: tuple[int, ...] = (200,)
    json_field: str | None = None  # dotted path; integer parts index lists
    every: int = 1

    def field_path(self) -> tuple[str | int, ...]:
        if not self.json_field:
            return ()
        return tuple(int(p) if p.isdigit() else p for p in self.json_field.split("."))


@dataclass(frozen=True, slots=True)
class RequestTemplate:
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

    def render_path(self, model_name: str = "") -> str:
        return _render_str(self.path, self._scalars(model_name, None))

    def _scalars(self, model_name: str, encoded: EncodedInput | None) -> dict[str, Any]:
        name = model_name or self.model_name
        values: dict[str, Any] = {"model": name, "name": name}
        if encoded is not None:
            spec = encoded.spec
            values.update(
                shape_csv=",".join(str(d) for d in encoded.shape),
                dtype=encoded.dtype,
                datatype="BYTES"
                if spec.encoding in ("text", "png", "jpeg", "base64")
                else _KSERVE_DATATYPES.get(encoded.dtype, encoded.dtype.upper()),
                batch=encoded.shape[0] if encoded.shape else 1,
                pixels=encoded.pixels,
                token_len=encoded.token_len,
                input_field={"text": "text", "tokens": "tokens"}.get(spec.kind, "tensor")
                if spec.encoding != "text"
                else "text",
            )
        values.update(self.vars)
        return values

    def prepare(self, encoded: EncodedInput, model_name: str = "") -> Payload:
        """Render this template for one cell's input: body bytes, content type, headers and path, once."""
        encode_before = encoded.encode_s  # a lazy JSON dump below happens inside this timed window
        t0 = time.perf_counter()
        name = model_name or self.model_name
        scalars = self._scalars(name, encoded)
        headers = {k: _render_str(v, scalars) for k, v in self.headers.items()}
        content_type: str | None
        if self.body == "none":
            body, content_type = b"", None
        elif self.body == "json" or (self.json is not None and encoded.json_encoded):
            values = dict(scalars)
            doc = _render_json(self.json, values, encoded)
            body = json.dumps(doc, separators=(",", ":")).encode()
            content_type = "application/json"
        else:
            body, content_type = encoded.body, encoded.content_type
            headers = {**encoded.headers, **headers}
        if self.content_type:
            content_type = self.content_type
        render_s = time.perf_counter() - t0
        spec = encoded.spec
        hw = spec.scaled_hw() if spec.pixels is not None else None
        return Payload(
            body=body,
            content_type=content_type,
            headers=headers,
            path=_render_str(self.path, scalars),
            method=self.method,
            model_name=name,
            pixels=encoded.pixels,
            token_len=encoded.token_len,
            input_scale=encoded.spec.scale,
            shape=encoded.shape,
            encoding=encoded.spec.encoding,
            generate_s=encoded.generate_s,
            encode_s=encode_before + render_s,
            height=hw[0] if hw else None,
            width=hw[1] if hw else None,
        )

    def with_model(self, model_name: str) -> RequestTemplate:
        return replace(self, model_name=model_name)


# -- placeholders ---------------------------------------------------------------------------------------------


def _fields(text: str) -> list[str]:
    """The placeholder names in `text` (raises ValueError on a malformed one, e.g. a lone brace)."""
    names = []
    for _, fname, spec, conv in string.Formatter().parse(text):
        if fname is None:
            continue
        if spec or conv or not fname:
            raise ValueError(f"malformed placeholder in {text!r}")
        names.append(fname)
    return names


def _render_str(text: str, values: dict[str, Any]) -> str:
    if "{" not in text and "}" not in text:
        return text
    return text.format_map({k: "" if v is None else v for k, v in values.items()})


def _render_json(doc: Any, values: dict[str, Any], encoded: EncodedInput) -> Any:
    if isinstance(doc, str):
        names = _fields(doc)
        if len(names) == 1 and doc == "{" + names[0] + "}":
            name = names[0]
            if name == "input":
                return encoded.json_value()
            if name == "flat":
                return encoded.flat_value()
            if name == "shape":
                return list(encoded.shape)
            return values.get(name)
        return _render_str(doc, values)
    if isinstance(doc, dict):
        return {_render_str(k, values): _render_json(v, values, encoded) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_render_json(v, values, encoded) for v in doc]
    return doc


# -- built-in templates ----------------------------------------------------------------------------------------

BUILTIN_TEMPLATES: dict[str, RequestTemplate] = {
    t.name: t
    for t in (
        RequestTemplate(
            name="tui-profiler",
            description='our model server: raw tensor bytes (or PNG/JPEG, or {"tensor": [...]}) to /predict',
            path="/predict",
            body="input",
            json={"{input_field}": "{input}"},
        ),
        RequestTemplate(
            name="tfserving",
            description='TensorFlow Serving REST: POST /v1/models/{name}:predict with {"instances": [...]}',
            path="/v1/models/{name}:predict",
            body="json",
            json={"instances": "{input}"},
            check=ResponseCheck(json_field="predictions"),
        ),
        RequestTemplate(
            name="torchserve",
            description="TorchServe inference API: POST /predictions/{name} with the encoded input (e.g. a JPEG)",
            path="/predictions/{name}",
            body="input",
        ),
        RequestTemplate(
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
        RequestTemplate(
            name="tei",
            description='Hugging Face text-embeddings-inference: POST /embed with {"inputs": text}',
            path="/embed",
            body="json",
            json={"inputs": "{input}"},
        ),
        RequestTemplate(
            name="tgi",
            description='Hugging Face text-generation-inference: POST /generate with {"inputs": text, "parameters"}',
            path="/generate",
            body="json",
            json={"inputs": "{input}", "parameters": {"max_new_tokens": "{max_new_tokens}"}},
            vars={"max_new_tokens": 16},
            check=ResponseCheck(json_field="generated_text"),
        ),
        RequestTemplate(
            name="openai-embeddings",
            description='OpenAI-compatible embeddings: POST /v1/embeddings with {"model", "input"}',
            path="/v1/embeddings",
            body="json",
            json={"model": "{model}", "input": "{input}"},
            check=ResponseCheck(json_field="data"),
        ),
    )
}


def default_template() -> RequestTemplate:
    return BUILTIN_TEMPLATES["tui-profiler"]


def builtin_template(name: str) -> RequestTemplate:
    try:
        return BUILTIN_TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r} — built-in: {', '.join(BUILTIN_TEMPLATES)}") from None


# -- parsing and validation ------------------------------------------------------------------------------------


def _err(where: str, key: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{where}.{key}: {value!r} — {allowed}")


def _check_placeholders(where: str, key: str, text: str, known: set[str], *, scalar_only: bool) -> None:
    try:
        names = _fields(text)
    except ValueError:
        raise _err(where, key, text, "a malformed placeholder (write {{ and }} for literal braces)") from None
    for name in names:
        if name not in known:
            raise _err(where, key, text, f"unknown placeholder {{{name}}}; known: {', '.join(sorted(known))}")
        whole = text == "{" + name + "}"
        if name in VALUE_PLACEHOLDERS and (scalar_only or not whole):
            raise _err(where, key, text, f"{{{name}}} is a whole value: use it alone as a JSON string")


def _validate_json_doc(where: str, key: str, doc: Any, known: set[str]) -> None:
    if isinstance(doc, str):
        _check_placeholders(where, key, doc, known, scalar_only=False)
    elif isinstance(doc, dict):
        for k, v in doc.items():
            _check_placeholders(where, f"{key}.{k}", str(k), known, scalar_only=True)
            _validate_json_doc(where, f"{key}.{k}", v, known)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            _validate_json_doc(where, f"{key}.{i}", v, known)
    elif doc is not None and not isinstance(doc, int | float | bool):
        raise _err(where, key, doc, "JSON values only (tables, arrays, strings, numbers, booleans)")


def _parse_check(raw: Any, where: str, base: ResponseCheck) -> ResponseCheck:
    if not isinstance(raw, dict):
        raise _err(where, "check", raw, "a table with status, json_field, every")
    for k in raw:
        if k not in CHECK_KEYS:
            raise _err(where, f"check.{k}", raw[k], f"unknown key; allowed: {', '.join(CHECK_KEYS)}")
    status = base.status
    if "status" in raw:
        val = raw["status"]
        items = val if isinstance(val, list) else [val]
        if not items or not all(
            isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in items
        ):
            raise _err(
                where,
                "check.status",
                val,
                "an HTTP status 100–599 or a list of them (a check that can match)",
            )
        status = tuple(items)
    json_field = base.json_field
    if "json_field" in raw:
        val = raw["json_field"]
        if val in ("", None):
            json_field = None
        elif not isinstance(val, str) or not _FIELD_PATH.match(val):
            raise _err(
                where, "check.json_field", val, "a dotted path such as 'predictions' or 'outputs.0.data'"
            )
        else:
            json_field = val
    every = base.every
    if "every" in raw:
        val = raw["every"]
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise _err(where, "check.every", val, "an integer >= 1")
        every = val
    return ResponseCheck(status=status, json_field=json_field, every=every)


def parse_template(section: dict, where: str) -> RequestTemplate:
    """A template from a preset table (`base = "<built-in>"` plus overrides, or a full definition).
    `where` names the table for messages, e.g. "presets/x.toml: request.template"."""
    if not isinstance(section, dict):
        raise ValueError(f"{where}: {section!r} — a table, or the name of a built-in template")
    for k in section:
        if k not in TEMPLATE_KEYS:
            raise _err(where, k, section[k], f"unknown key; allowed: {', '.join(TEMPLATE_KEYS)}")
    base_name = section.get("base", "tui-profiler")
    if not isinstance(base_name, str) or base_name not in BUILTIN_TEMPLATES:
        raise _err(where, "base", base_name, f"a built-in template: {', '.join(BUILTIN_TEMPLATES)}")
    base = BUILTIN_TEMPLATES[base_name]
    # A bare `base` keeps the built-in's name; anything else is a customised template.
    changes: dict[str, Any] = {"name": base_name if set(section) <= {"base"} else f"{base_name}+custom"}

    if "method" in section:
        m = section["method"]
        if not isinstance(m, str) or m.upper() not in METHODS:
            raise _err(where, "method", m, f"one of {', '.join(METHODS)}")
        changes["method"] = m.upper()
    if "path" in section:
        p = section["path"]
        if not isinstance(p, str) or not p.startswith("/"):
            raise _err(where, "path", p, "a path starting with '/'")
        changes["path"] = p
    if "headers" in section:
        h = section["headers"]
        if not isinstance(h, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in h.items()
        ):
            raise _err(where, "headers", h, "a table of header name = string value")
        for k in h:
            if k.lower() in ("content-length", "host", "transfer-encoding", "connection"):
                raise _err(where, f"headers.{k}", h[k], "set by the load generator; remove it")
        changes["headers"] = dict(h)
    if "content_type" in section:
        ct = section["content_type"]
        if not isinstance(ct, str) or "/" not in ct:
            raise _err(where, "content_type", ct, "a media type such as 'application/json'")
        changes["content_type"] = ct
    if "body" in section:
        b = section["body"]
        if b not in BODY_KINDS:
            raise _err(where, "body", b, f"one of {', '.join(BODY_KINDS)}")
        changes["body"] = b
    if "json" in section:
        changes["json"] = copy.deepcopy(section["json"])
    if "server_timing" in section:
        st = section["server_timing"]
        if not isinstance(st, bool):
            raise _err(where, "server_timing", st, "true or false")
        changes["server_timing"] = st
    if "vars" in section:
        v = section["vars"]
        if not isinstance(v, dict):
            raise _err(where, "vars", v, "a table of name = value")
        for k, val in v.items():
            if not isinstance(k, str) or not _VAR_NAME.match(k) or k in BUILTIN_PLACEHOLDERS:
                raise _err(where, f"vars.{k}", val, "a new identifier (not a built-in placeholder)")
            if not isinstance(val, str | int | float | bool):
                raise _err(where, f"vars.{k}", val, "a string, number or boolean")
        changes["vars"] = {**base.vars, **v}
    if "check" in section:
        changes["check"] = _parse_check(section["check"], where, base.check)

    template = replace(base, **changes)
    validate_template(template, where)
    return template


def validate_template(template: RequestTemplate, where: str) -> None:
    """Every placeholder known, the body kind coherent. Raises ValueError with one line."""
    known = set(BUILTIN_PLACEHOLDERS) | set(template.vars)
    _check_placeholders(where, "path", template.path, known, scalar_only=True)
    for k, v in template.headers.items():
        _check_placeholders(where, f"headers.{k}", v, known, scalar_only=True)
    if template.body == "json" and template.json is None:
        raise _err(where, "json", None, "body = 'json' needs a json document")
    if template.json is not None:
        _validate_json_doc(where, "json", template.json, known)
    if template.method == "GET" and template.body != "none":
        raise _err(where, "body", template.body, "a GET request has no body: set body = 'none'")


REQUEST_KEYS = ("template", "model_name", *[k for k in TEMPLATE_KEYS if k != "base"])


def parse_request_section(section: dict, where: str, default_model_name: str = "") -> RequestTemplate:
    """The preset's `[request]` section (schema at the top of this module) → a validated template with
    its model name set. `where` prefixes messages, e.g. "presets/x.toml: request"."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ValueError(f"{where}: {section!r} — a table")
    for k in section:
        if k not in REQUEST_KEYS:
            raise _err(where, k, section[k], f"unknown key; allowed: {', '.join(REQUEST_KEYS)}")
    raw_template = section.get("template", "tui-profiler")
    if isinstance(raw_template, str):
        if raw_template not in BUILTIN_TEMPLATES:
            raise _err(
                where,
                "template",
                raw_template,
                f"a built-in template: {', '.join(BUILTIN_TEMPLATES)}, or a table",
            )
        table: dict[str, Any] = {"base": raw_template}
    elif isinstance(raw_template, dict):
        table = dict(raw_template)
    else:
        raise _err(where, "template", raw_template, "the name of a built-in template, or a table")
    overrides = {k: v for k, v in section.items() if k not in ("template", "model_name")}
    if "check" in overrides and "check" in table and isinstance(table["check"], dict):
        overrides["check"] = (
            {**table["check"], **overrides["check"]}
            if isinstance(overrides["check"], dict)
            else overrides["check"]
        )
    merged = {**table, **overrides}
    sub_where = f"{where}.template" if isinstance(raw_template, dict) and not overrides else where
    template = parse_template(merged, sub_where)
    if isinstance(raw_template, str) and not overrides:
        template = replace(template, name=raw_template)
    model_name = section.get("model_name", default_model_name)
    if not isinstance(model_name, str):
        raise _err(where, "model_name", model_name, "a string")
    if not model_name and ("{name}" in template.path or "{model}" in template.path):
        raise _err(where, "model_name", model_name, f"the template's path {template.path} needs a model name")
    return replace(template, model_name=model_name)


def describe_templates() -> list[tuple[str, str]]:
    return [(t.name, t.description) for t in BUILTIN_TEMPLATES.values()]
