"""Request templates, rendered: a cell's encoded input becomes the bytes, headers and path every request
of the cell sends (`RequestTemplate.prepare`, once per cell, never per request).

What a template is, the built-in ones and the `[request]` section of a preset are declared in
`tui_profiler.config.request`; a `RequestTemplate` is built from that declaration
(`template_for(preset)`, `RequestTemplate.from_spec`). The placeholders a template may use are listed there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields, replace
from typing import Any

from pydantic import ValidationError

from tui_profiler.config.errors import PresetError
from tui_profiler.config.model import Preset
from tui_profiler.config.request import (
    BODY_KINDS,
    BUILTIN_PLACEHOLDERS,
    DEFAULT_TEMPLATE,
    METHODS,
    OPTIONAL_PLACEHOLDERS,
    SCALAR_PLACEHOLDERS,
    VALUE_PLACEHOLDERS,
    RequestConfig,
    ResponseCheck,
    TemplateSpec,
    describe_templates,
    placeholder_names,
)
from tui_profiler.config.request import BUILTIN_TEMPLATES as BUILTIN_SPECS
from tui_profiler.load.inputs import EncodedInput, InputSpec, Payload, PayloadSet, encode_input, prompt_pool

__all__ = [
    "BODY_KINDS",
    "BUILTIN_PLACEHOLDERS",
    "BUILTIN_TEMPLATES",
    "METHODS",
    "SCALAR_PLACEHOLDERS",
    "VALUE_PLACEHOLDERS",
    "RequestTemplate",
    "ResponseCheck",
    "build_payload",
    "build_payloads",
    "builtin_template",
    "default_template",
    "describe_templates",
    "parse_request_section",
    "parse_template",
    "template_for",
]
_KSERVE_DATATYPES = {
    "float32": "FP32",
    "float16": "FP16",
    "float64": "FP64",
    "uint8": "UINT8",
    "int64": "INT64",
    "int32": "INT32",
}


@dataclass(frozen=True, slots=True)
class RequestTemplate(TemplateSpec):
    """A resolved template that can render a cell's input."""

    @classmethod
    def from_spec(cls, spec: TemplateSpec) -> RequestTemplate:
        return cls(**{f.name: getattr(spec, f.name) for f in fields(TemplateSpec)})

    def render_path(self, model_name: str = "") -> str:
        return _render_str(self.path, self._scalars(model_name, None))

    def _scalars(
        self, model_name: str, encoded: EncodedInput | None, output_len: int | None = None
    ) -> dict[str, Any]:
        name = model_name or self.model_name
        values: dict[str, Any] = {
            "model": name,
            "name": name,
            "output_len": output_len,
            "ignore_eos": True if output_len is not None else None,
        }
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

    def prepare(self, encoded: EncodedInput, model_name: str = "", output_len: int | None = None) -> Payload:
        """Render this template for one cell's input: body bytes, content type, headers and path, once.
        `output_len`: the cell's output length (the `{output_len}` placeholder; None: the server's default)."""
        encode_before = encoded.encode_s  # a lazy JSON dump below happens inside this timed window
        t0 = time.perf_counter()
        name = model_name or self.model_name
        scalars = self._scalars(name, encoded, output_len)
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


def _render_str(text: str, values: dict[str, Any]) -> str:
    if "{" not in text and "}" not in text:
        return text
    return text.format_map({k: "" if v is None else v for k, v in values.items()})


def _render_json(doc: Any, values: dict[str, Any], encoded: EncodedInput) -> Any:
    if isinstance(doc, str):
        names = placeholder_names(doc)
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
        return {
            _render_str(k, values): _render_json(v, values, encoded)
            for k, v in doc.items()
            if not _left_out(v, values)
        }
    if isinstance(doc, list):
        return [_render_json(v, values, encoded) for v in doc]
    return doc


def _left_out(value: Any, values: dict[str, Any]) -> bool:
    """A member whose value is only an optional placeholder without a value (the server's default then)."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        name = value[1:-1]
        return name in OPTIONAL_PLACEHOLDERS and values.get(name) is None
    return False


# -- built-in templates and templates from presets ------------------------------------------------------------

BUILTIN_TEMPLATES: dict[str, RequestTemplate] = {
    name: RequestTemplate.from_spec(spec) for name, spec in BUILTIN_SPECS.items()
}


def default_template() -> RequestTemplate:
    return BUILTIN_TEMPLATES[DEFAULT_TEMPLATE]


def builtin_template(name: str) -> RequestTemplate:
    try:
        return BUILTIN_TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r} — built-in: {', '.join(BUILTIN_TEMPLATES)}") from None


def template_for(preset: Preset) -> RequestTemplate:
    """The template a preset's requests use (its `[request]`, or our own server's), with the model name."""
    return RequestTemplate.from_spec(preset.request.resolved(preset.model))


def _split_where(where: str) -> tuple[str, tuple[str, ...]]:
    """ "presets/x.toml: request" -> ("presets/x.toml", ("request",)): the file, then the field prefix."""
    source, sep, prefix = where.rpartition(": ")
    if not sep:
        return where, ()
    return source, (prefix,) if prefix else ()


def parse_request_section(
    section: Any, where: str, default_model_name: str = "", *, needs_model_name: bool = True
) -> RequestTemplate:
    """A preset's `[request]` table -> a validated template with its model name set. `where` prefixes
    messages, e.g. "presets/x.toml: request". Raises PresetError (a ValueError) in one line."""
    source, prefix = _split_where(where)
    data = {} if section is None else section
    try:
        config = RequestConfig.model_validate(data)
    except ValidationError as exc:
        raise PresetError.from_validation(exc, source, data, RequestConfig, prefix) from None
    problem = config.model_name_problem(default_model_name) if needs_model_name else None
    if problem is not None:
        fieldname, value, allowed = problem
        raise PresetError(source, ".".join([*prefix, fieldname.split(".", 1)[1]]), value, allowed)
    return RequestTemplate.from_spec(config.resolved(default_model_name))


def parse_template(section: Any, where: str) -> RequestTemplate:
    """A template table (`base = "<built-in>"` plus changes, or a full definition); the model name is
    given when it is rendered."""
    return parse_request_section({"template": section}, where, needs_model_name=False)


def build_payload(
    spec: InputSpec,
    template: RequestTemplate | None = None,
    model_name: str = "",
    output_len: int | None = None,
) -> Payload:
    """Generate, encode and render one cell's request once. `template` defaults to our own server's;
    `output_len` is the cell's output length (None: the server's default)."""
    encoded = encode_input(spec)
    return (template or default_template()).prepare(encoded, model_name=model_name, output_len=output_len)


def build_payloads(
    spec: InputSpec,
    template: RequestTemplate | None = None,
    model_name: str = "",
    output_len: int | None = None,
    *,
    count: int = 1,
    shared_prefix_tokens: int = 0,
    stream: int = 0,
    max_bytes: int | None = None,
) -> PayloadSet:
    """Every request of one cell, rendered once, before its load. Prompts (kind tokens or text): `count`
    distinct ones (`load.inputs.prompt_pool`: `shared_prefix_tokens` common, then each its own; `stream`
    keeps cells apart), each with its index and `input_hash`, fewer when their bodies would pass `max_bytes`
    (the requests then cycle through them, and the cell says so); any other input: one payload, sent by
    every request."""
    if spec.kind not in ("tokens", "text"):
        return PayloadSet((build_payload(spec, template, model_name, output_len),))
    template = template or default_template()
    payloads: list[Payload] = []
    total = 0
    pool = prompt_pool(spec, count, shared_prefix_tokens=shared_prefix_tokens, stream=stream)
    for index, (encoded, digest) in enumerate(pool):
        payload = template.prepare(encoded, model_name=model_name, output_len=output_len)
        total += len(payload.body)
        if payloads and max_bytes is not None and total > max_bytes:
            break
        payloads.append(replace(payload, input_index=index, input_hash=digest))
    return PayloadSet(tuple(payloads))
