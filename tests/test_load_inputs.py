"""The input generator: deterministic payloads per scale / token length, every encoding decodable, the
encode cost measured once."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from tui_profiler.load.inputs import InputSpec, encode_input
from tui_profiler.load.template import build_payload


@pytest.mark.parametrize(
    ("scale", "hw"), [(0.1, (67, 100)), (0.5, (334, 500)), (1.0, (667, 1000)), (0.0001, (1, 1))]
)
def test_pixels_follow_the_scale_rounded_and_at_least_one(scale: float, hw: tuple[int, int]) -> None:
    spec = InputSpec(kind="image", base_size=(667, 1000), scale=scale)
    assert spec.scaled_hw() == hw and spec.pixels == hw[0] * hw[1]
    p = build_payload(spec)
    assert (p.height, p.width, p.pixels) == (*hw, hw[0] * hw[1])
    assert len(p.body) == 3 * hw[0] * hw[1] * 4  # float32 CHW
    assert p.headers["X-Tensor-Shape"] == f"1,3,{hw[0]},{hw[1]}"


def test_same_spec_same_bytes_other_seed_other_bytes() -> None:
    for enc in ("raw", "png", "jpeg", "json", "base64"):
        a = build_payload(InputSpec(kind="image", base_size=(30, 40), encoding=enc, seed=5))
        b = build_payload(InputSpec(kind="image", base_size=(30, 40), encoding=enc, seed=5))
        c = build_payload(InputSpec(kind="image", base_size=(30, 40), encoding=enc, seed=6))
        assert a.body == b.body and a.body != c.body, enc


def test_image_encodings_decode_to_the_scaled_size() -> None:
    for enc in ("png", "jpeg"):
        p = build_payload(InputSpec(kind="image", base_size=(667, 1000), scale=0.2, encoding=enc))
        img = Image.open(io.BytesIO(p.body))
        assert img.size == (200, 133) and img.mode == "RGB" and p.content_type == f"image/{enc}"
    raw = build_payload(InputSpec(kind="image", base_size=(10, 20), dtype="uint8", layout="hwc"))
    assert raw.headers == {"X-Tensor-Shape": "1,10,20,3", "X-Tensor-Dtype": "uint8"} and len(raw.body) == 600
    b64 = encode_input(InputSpec(kind="image", base_size=(4, 5), encoding="base64"))
    arr = np.frombuffer(base64.b64decode(b64.body), dtype=np.float32)
    assert arr.size == 60 and 0 <= arr.min() and arr.max() <= 1


def test_json_encodings_hold_the_same_tensor_as_raw() -> None:
    raw = encode_input(InputSpec(kind="tensor", base_size=(3, 4), encoding="raw", seed=2))
    j = encode_input(InputSpec(kind="tensor", base_size=(3, 4), encoding="json", seed=2))
    inst = encode_input(InputSpec(kind="tensor", base_size=(3, 4), encoding="json-instances", seed=2))
    ref = np.frombuffer(raw.body, dtype=np.float32).reshape(1, 3, 4)
    assert np.allclose(np.array(json.loads(j.body), dtype=np.float32), ref)
    assert np.allclose(np.array(json.loads(inst.body)["instances"], dtype=np.float32), ref)


def test_tokens_and_text_lengths() -> None:
    t = encode_input(InputSpec(kind="tokens", base_size=(128,), token_len=37, vocab_size=5000))
    ids = np.frombuffer(t.body, dtype=np.int64)
    assert t.token_len == 37 and ids.size == 37 and ids.min() >= 1000 and ids.max() < 5000
    assert t.headers == {"X-Tensor-Shape": "1,37", "X-Tensor-Dtype": "int64"}
    scaled = InputSpec(kind="tokens", base_size=(128,), scale=0.5)
    assert scaled.effective_token_len == 64 and scaled.pixels is None
    text = encode_input(InputSpec(kind="text", base_size=(8,), token_len=300, encoding="text"))
    assert len(text.body.decode().split()) == 300 and text.token_len == 300


def test_encode_time_measured_once_and_reported() -> None:
    p = build_payload(InputSpec(kind="image", base_size=(667, 1000), scale=0.3, encoding="json"))
    assert p.encode_s > 0 and p.generate_s > 0
    # JSON bodies are several times larger than the raw tensor they carry
    raw = build_payload(InputSpec(kind="image", base_size=(667, 1000), scale=0.3, encoding="raw"))
    assert len(p.body) > 2 * len(raw.body)
    row = p.as_row()
    assert row["pixels"] == 200 * 300 and row["bytes_sent"] == len(p.body) and row["token_len"] is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "video"}, "input.kind"),
        ({"encoding": "webp"}, "input.encoding"),
        ({"kind": "text", "encoding": "png"}, "input.encoding"),
        ({"kind": "tensor", "encoding": "jpeg"}, "input.encoding"),
        ({"dtype": "bfloat16"}, "input.dtype"),
        ({"base_size": (224,)}, "input.base_size"),
        ({"scale": 0}, "input.scale"),
        ({"layout": "nchw"}, "input.layout"),
        ({"kind": "tokens", "token_len": 0}, "input.token_len"),
    ],
)
def test_bad_specs_are_one_line_errors(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError) as err:
        InputSpec(**kwargs)
    assert str(err.value).startswith(f"{field}: ") and "\n" not in str(err.value)


def test_a_payloads_columns_are_the_schemas_input_columns() -> None:
    """The session writer formats a cell's other settings once: these are the ones that vary per input."""
    from tui_profiler.session.schema import CELL_CONSTANT_COLUMNS, INPUT_COLUMNS, REQUEST_COLUMNS

    row = build_payload(InputSpec(kind="image", base_size=(8, 8), encoding="raw")).as_row()
    assert tuple(row) == INPUT_COLUMNS
    assert set(INPUT_COLUMNS) <= set(REQUEST_COLUMNS)
    assert not set(INPUT_COLUMNS) & set(CELL_CONSTANT_COLUMNS)
