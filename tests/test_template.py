"""Request templates: each built-in renders the right method, path and body; bad templates are one-line
errors naming the field, raised before anything starts."""

from __future__ import annotations

import base64
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from tui_profiler.load.inputs import InputSpec, encode_input
from tui_profiler.load.template import (
    BUILTIN_TEMPLATES,
    build_payload,
    builtin_template,
    default_template,
    parse_request_section,
    parse_template,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "presets" / "examples"
TENSOR = InputSpec(kind="tensor", base_size=(2, 3), dtype="float32", encoding="raw", seed=3)
TEXT = InputSpec(kind="text", base_size=(8,), encoding="text", seed=1)


def body_json(p) -> object:  # type: ignore[no-untyped-def]
    return json.loads(p.body)


def test_default_template_is_our_server_raw_protocol() -> None:
    p = build_payload(TENSOR)
    assert (p.method, p.path, p.content_type) == ("POST", "/predict", "application/octet-stream")
    assert p.headers == {"X-Tensor-Shape": "1,2,3", "X-Tensor-Dtype": "float32"}
    arr = np.frombuffer(p.body, dtype=np.float32).reshape(1, 2, 3)
    assert np.array_equal(arr, encode_input(TENSOR)._array)
    # a JSON tensor goes in {"tensor": ...}; token ids in {"tokens": ...} and text in {"text": ...}
    j = build_payload(InputSpec(kind="tensor", base_size=(2, 3), encoding="json", seed=3))
    assert j.content_type == "application/json" and np.allclose(body_json(j)["tensor"], arr)  # type: ignore[index]
    t = build_payload(InputSpec(kind="tokens", base_size=(5,), encoding="json"))
    assert len(body_json(t)["tokens"][0]) == 5  # type: ignore[index]
    x = build_payload(InputSpec(kind="tokens", base_size=(5,), encoding="text"))
    assert len(body_json(x)["text"].split()) == 5  # type: ignore[index]
    img = build_payload(InputSpec(kind="image", base_size=(20, 30), encoding="jpeg"))
    assert img.content_type == "image/jpeg" and img.body[:2] == b"\xff\xd8" and img.headers == {}


def test_tfserving() -> None:
    tpl = builtin_template("tfserving")
    p = build_payload(TENSOR, tpl, "resnet")
    assert (p.method, p.path, p.content_type) == ("POST", "/v1/models/resnet:predict", "application/json")
    doc = body_json(p)
    assert np.array(doc["instances"]).shape == (1, 2, 3)  # type: ignore[index]
    assert tpl.check.json_field == "predictions"
    # a JPEG travels as base64 text
    b = build_payload(InputSpec(kind="image", base_size=(8, 8), encoding="jpeg"), tpl, "m")
    assert base64.b64decode(body_json(b)["instances"])[:2] == b"\xff\xd8"  # type: ignore[index]


def test_torchserve_sends_the_encoded_input() -> None:
    spec = InputSpec(kind="image", base_size=(16, 16), encoding="png")
    p = build_payload(spec, builtin_template("torchserve"), "densenet161")
    assert (p.method, p.path, p.content_type) == ("POST", "/predictions/densenet161", "image/png")
    assert p.body.startswith(b"\x89PNG")


def test_kserve_v2() -> None:
    p = build_payload(TENSOR, builtin_template("kserve-v2"), "resnet")
    assert p.path == "/v2/models/resnet/infer"
    (inp,) = body_json(p)["inputs"]  # type: ignore[index]
    assert inp["name"] == "INPUT__0" and inp["shape"] == [1, 2, 3] and inp["datatype"] == "FP32"
    assert len(inp["data"]) == 6  # flat, row-major
    tok = build_payload(
        InputSpec(kind="tokens", base_size=(4,), encoding="raw"),
        parse_template({"base": "kserve-v2", "vars": {"input_name": "input_ids"}}, "t"),
        "bert",
    )
    (inp,) = body_json(tok)["inputs"]  # type: ignore[index]
    assert inp["name"] == "input_ids" and inp["datatype"] == "INT64" and inp["shape"] == [1, 4]


def test_text_templates() -> None:
    tei = build_payload(TEXT, builtin_template("tei"))
    assert tei.path == "/embed" and len(body_json(tei)["inputs"].split()) == 8  # type: ignore[index]
    tgi = build_payload(TEXT, builtin_template("tgi"))
    doc = body_json(tgi)
    assert tgi.path == "/generate" and doc["parameters"] == {"max_new_tokens": 16}  # type: ignore[index]
    oai = build_payload(TEXT, builtin_template("openai-embeddings"), "bge-small")
    doc = body_json(oai)
    assert oai.path == "/v1/embeddings" and doc["model"] == "bge-small" and isinstance(doc["input"], str)  # type: ignore[index]


def test_every_builtin_validates_and_has_an_example_preset() -> None:
    assert set(BUILTIN_TEMPLATES) == {
        "tui-profiler",
        "tfserving",
        "torchserve",
        "kserve-v2",
        "tei",
        "tgi",
        "openai-embeddings",
        "tgi-stream",
        "openai-completions",
        "openai-chat",
        "litserve",
    }
    for name in BUILTIN_TEMPLATES:
        assert parse_template({"base": name}, "t").name == name
    covered = set()
    for path in sorted(EXAMPLES.glob("*.toml")):
        doc = tomllib.loads(path.read_text())
        tpl = parse_request_section(doc.get("request", {}), f"{path.name}: request", doc.get("model", ""))
        covered.add(tpl.name.split("+")[0])
    assert covered >= set(BUILTIN_TEMPLATES) - {"tui-profiler"}


def test_request_section_overrides_and_model_name() -> None:
    tpl = parse_request_section(
        {"template": "tfserving", "model_name": "half_plus_two", "check": {"status": [200, 201]}},
        "x.toml: request",
    )
    assert tpl.model_name == "half_plus_two" and tpl.check.status == (200, 201)
    assert tpl.check.json_field == "predictions"  # kept from the built-in
    assert tpl.render_path() == "/v1/models/half_plus_two:predict"
    custom = parse_request_section(
        {
            "template": {
                "method": "PUT",
                "path": "/api/{name}/run",
                "body": "json",
                "json": {"data": "{input}", "meta": {"len": "{token_len}", "tag": "n={token_len}"}},
            },
            "model_name": "m",
        },
        "x.toml: request",
    )
    p = build_payload(TEXT, custom)
    assert p.method == "PUT" and p.path == "/api/m/run"
    assert body_json(p)["meta"] == {"len": 8, "tag": "n=8"}  # type: ignore[index]
    assert parse_request_section({}, "x", "resnet50").name == "tui-profiler"


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"path": "/v1/{modle}:predict"}, "request.path"),
        ({"json": {"a": "{inptu}"}}, "request.json.a"),
        ({"json": {"a": "x{input}"}}, "request.json.a"),
        ({"headers": {"X-A": "{shape}"}}, "request.headers.X-A"),
        ({"body": "xml"}, "request.body"),
        ({"template": {"base": "torchserve", "body": "json"}, "model_name": "m"}, "request.template.json"),
        ({"check": {"status": 999}}, "request.check.status"),
        ({"check": {"status": "ok"}}, "request.check.status"),
        ({"check": {"status": []}}, "request.check.status"),
        ({"check": {"json_field": "a..b"}}, "request.check.json_field"),
        ({"check": {"every": 0}}, "request.check.every"),
        ({"check": {"stauts": 200}}, "request.check.stauts"),
        ({"metod": "POST"}, "request.metod"),
        ({"method": "FETCH"}, "request.method"),
        ({"method": "GET"}, "request.body"),
        ({"path": "predict"}, "request.path"),
        ({"headers": {"Content-Length": "3"}}, "request.headers.Content-Length"),
        ({"template": "tf-serving"}, "request.template"),
        ({"template": {"base": "nope"}}, "request.template.base"),
        ({"template": "tfserving"}, "request.model_name"),
        ({"vars": {"input": 3}}, "request.vars.input"),
        ({"path": "/a/{"}, "request.path"),
    ],
)
def test_bad_templates_are_one_line_errors_naming_the_field(section: dict, field: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_request_section(section, "my.toml: request")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"my.toml: {field}: "), msg
    assert " — " in msg


def test_default_template_renders_the_same_bytes_twice() -> None:
    a = build_payload(InputSpec(kind="image", base_size=(40, 60), scale=0.5, encoding="png", seed=9))
    b = build_payload(InputSpec(kind="image", base_size=(40, 60), scale=0.5, encoding="png", seed=9))
    assert a.body == b.body and default_template().name == "tui-profiler"


def test_the_builtin_name_type_and_the_table_list_the_same_templates() -> None:
    """`BuiltinName` (for the type checker) and `BUILTIN_TEMPLATES` (the specs) are written apart: keep them equal."""
    from typing import get_args

    from tui_profiler.config.request import BUILTIN_TEMPLATES, BuiltinName

    assert set(get_args(BuiltinName)) == set(BUILTIN_TEMPLATES)
