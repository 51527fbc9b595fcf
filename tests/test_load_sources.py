"""Users' own inputs (`[input] files` / `folder`): real photos resized from their own size and encoded as
the preset says, text lines cut or padded to token lengths, request bodies sent byte for byte; one-line
errors for bad files before anything starts; every request row names the input it sent.

End to end: the folder of real photos in tests/data/photos (see tests/data/photos-LICENSE.md) is
profiled at three scales through `SweepRunner` against our model server run as a process; bodies and text
against a local stdlib server that records what it received."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from PIL import Image

from tui_profiler import formatting
from tui_profiler.config import PresetError, preset_from_dict
from tui_profiler.config.model import Preset
from tui_profiler.load.sources import fit_words, guess_content_type, open_sources
from tui_profiler.load.template import template_for
from tui_profiler.plan import build_plan
from tui_profiler.session.store import recording

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "tests" / "data" / "photos"


def preset(input_section: dict[str, Any], where: Path, **top: Any) -> Preset:
    """A preset as if read from `where`/p.toml (relative input paths are relative to it)."""
    data = {"name": "t", "model": "mobilenet_v3_small", "input": input_section, **top}
    return preset_from_dict(data, str(where / "p.toml"), check_host=False)


def sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def read_requests(session_dir: str | Path) -> list[dict[str, str]]:
    with open(Path(session_dir) / "requests.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------ checks, one line


@pytest.mark.parametrize(
    ("section", "make", "message"),
    [
        (
            {"files": ["a.jpg", "nope.jpg"]},
            {"a.jpg": "photo"},
            "p.toml: input.files[1]: 'nope.jpg' — not found",
        ),
        ({"files": ["empty.jpg"]}, {"empty.jpg": b""}, "p.toml: input.files: 'empty.jpg' — empty"),
        (
            {"files": ["notes.jpg"]},
            {"notes.jpg": b"not a picture"},
            "input.files: 'notes.jpg' — not an image",
        ),
        ({"files": ["sub"]}, {"sub/x.jpg": "photo"}, "input.files: 'sub' — a folder, not a file"),
        ({"folder": "gone"}, {}, "p.toml: input.folder: 'gone' — not found"),
        ({"folder": "sub"}, {"sub/.hidden": b"x"}, "p.toml: input.folder: 'sub' — empty (no file in it)"),
        (
            {"folder": "sub"},
            {"sub/a.jpg": "photo", "sub/b.txt": b"x"},
            "input.folder[1]: 'sub/b.txt' — not an image",
        ),
        (
            {"kind": "text", "encoding": "text", "files": ["p.jsonl"]},
            {"p.jsonl": b'{"text": "a b"}\n{"input": "c"}\n'},
            "input.files: 'p.jsonl' — line 2: needs a non-empty string field 'text' or 'prompt'",
        ),
        ({"kind": "text", "encoding": "text", "files": ["p.txt"]}, {"p.txt": b"\n \n"}, "no line of text"),
        ({"kind": "text", "encoding": "text", "files": ["p.txt"]}, {"p.txt": b"\xff\xfe\xfa"}, "not UTF-8"),
    ],
)
def test_a_bad_input_file_is_one_line_naming_the_field(
    tmp_path: Path, section: dict[str, Any], make: dict[str, Any], message: str
) -> None:
    for name, content in make.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "photo":
            path.write_bytes((PHOTOS / "rocket.jpg").read_bytes())
        else:
            path.write_bytes(content)
    with pytest.raises(PresetError) as err:
        open_sources(preset(section, tmp_path))
    text = str(err.value)
    assert message in text, text
    assert "\n" not in text


def test_a_bad_file_stops_the_sweep_before_any_container(tmp_path: Path) -> None:
    from tui_profiler.sweep import SweepRunner

    p = preset({"files": ["missing.png"]}, tmp_path)
    with pytest.raises(PresetError, match=r"input\.files: 'missing\.png' — not found"):
        SweepRunner(p, runtime="docker", output_dir=tmp_path / "out")  # raises in the constructor
    assert not (tmp_path / "out").exists()  # no session was started


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"files": ["a"], "folder": "b"}, "input.folder"),
        ({"kind": "tensor", "files": ["a"]}, "input.files"),
        ({"kind": "body"}, "input.kind"),
        ({"kind": "body", "files": ["a"], "scales": [0.5]}, "input.scales"),
        ({"kind": "text", "encoding": "text", "folder": "a"}, "input.folder"),
        ({"content_type": "image/jpeg"}, "input.content_type"),
        ({"order": "shuffled"}, "input.order"),
    ],
)
def test_input_fields_that_do_not_fit_together_are_refused(
    tmp_path: Path, section: dict[str, Any], field: str
) -> None:
    with pytest.raises(PresetError) as err:
        preset(section, tmp_path)
    assert f": {field}: " in str(err.value)


def test_a_body_input_needs_a_template_that_sends_it_as_is(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text("{}")
    p = preset({"kind": "body", "files": ["b.json"]}, tmp_path, request={"template": "tfserving"})
    with pytest.raises(PresetError, match="template's body must be 'input'"):
        open_sources(p)


# ------------------------------------------------------------------------------------ what is prepared


def test_photos_are_resized_from_their_own_size_and_encoded_as_the_preset_says(tmp_path: Path) -> None:
    p = preset({"folder": str(PHOTOS), "scales": [0.5], "encoding": "png"}, tmp_path)
    sources = open_sources(p)
    assert sources is not None
    names = sorted(f.name for f in PHOTOS.iterdir())
    assert [s.path.name for s in sources.inputs] == names
    payloads = sources.prepare(p, template_for(p), "m", scale=0.5)
    for i, (name, payload) in enumerate(zip(names, payloads.payloads, strict=True)):
        with Image.open(PHOTOS / name) as original:
            w0, h0 = original.size
        with Image.open(io.BytesIO(payload.body)) as sent:  # decodes: it is a real PNG of that size
            assert sent.format == "PNG"
            assert sent.size == (round(w0 * 0.5), round(h0 * 0.5))
        assert (payload.height, payload.width) == (round(h0 * 0.5), round(w0 * 0.5))
        assert payload.input_index == i and payload.input_hash == sha12(PHOTOS / name)
        assert payload.content_type == "image/png"
    row = payloads.common_row()
    assert row["pixels"] is None and row["input_scale"] == 0.5  # the photos differ in size, not in scale


def test_a_raw_tensor_of_a_photo_is_its_pixels(tmp_path: Path) -> None:
    import numpy as np

    p = preset({"files": [str(PHOTOS / "rocket.jpg")], "scales": [1.0], "dtype": "uint8"}, tmp_path)
    sources = open_sources(p)
    assert sources is not None
    (payload,) = sources.prepare(p, template_for(p), "m", scale=1.0).payloads
    with Image.open(PHOTOS / "rocket.jpg") as im:
        pixels = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    assert payload.headers["X-Tensor-Shape"] == f"1,3,{pixels.shape[1]},{pixels.shape[2]}"
    assert payload.body == pixels.tobytes()


def test_random_order_is_seeded_and_sequential_order_cycles(tmp_path: Path) -> None:
    p = preset({"folder": str(PHOTOS), "order": "random", "seed": 7, "encoding": "jpeg"}, tmp_path)
    sources = open_sources(p)
    assert sources is not None
    payloads = sources.prepare(p, template_for(p), "m", scale=1.0)
    first, again = payloads.chooser(), payloads.chooser()
    drawn = [first() for _ in range(60)]
    assert drawn == [again() for _ in range(60)]  # the same seed, the same inputs
    assert set(drawn) == {0, 1, 2} and drawn[:6] != [0, 1, 2, 0, 1, 2]
    other = preset({"folder": str(PHOTOS), "order": "random", "seed": 8, "encoding": "jpeg"}, tmp_path)
    other_sources = open_sources(other)
    assert other_sources is not None
    c = other_sources.prepare(other, template_for(other), "m", scale=1.0).chooser()
    assert [c() for _ in range(60)] != drawn
    seq = open_sources(preset({"folder": str(PHOTOS), "encoding": "jpeg"}, tmp_path))
    assert seq is not None
    c = seq.prepare(p, template_for(p), "m", scale=1.0).chooser()
    assert [c() for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_text_lines_are_cut_or_padded_to_the_token_lengths(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("one two three four five\n\nsix seven\n")
    (tmp_path / "q.jsonl").write_text('{"text": "alpha beta"}\n{"prompt": "gamma delta epsilon", "id": 3}\n')
    section = {"kind": "text", "encoding": "text", "files": ["p.txt", "q.jsonl"], "token_lens": [3, 6]}
    p = preset(section, tmp_path)
    assert [c.token_len for c in build_plan(p)] == [3, 6]
    sources = open_sources(p)
    assert sources is not None
    assert [s.text for s in sources.inputs] == [
        "one two three four five",
        "six seven",
        "alpha beta",
        "gamma delta epsilon",
    ]
    assert (
        sources.inputs[1].line == 3
        and sources.inputs[1].digest == hashlib.sha256(b"six seven").hexdigest()[:12]
    )
    cut = sources.prepare(p, template_for(p), "m", token_len=3)
    assert [json.loads(x.body)["text"] for x in cut.payloads] == [
        "one two three",
        "six seven six",
        "alpha beta alpha",
        "gamma delta epsilon",
    ]
    assert {x.token_len for x in cut.payloads} == {3}
    assert fit_words("a b", 5) == "a b a b a"


def test_text_from_files_is_sent_as_written_without_token_lengths(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("a long prompt of seven words here\nshort one\n")
    p = preset({"kind": "text", "encoding": "text", "files": ["p.txt"]}, tmp_path)
    cells = build_plan(p)
    assert len(cells) == 1 and cells[0].token_len is None
    assert "tokens" not in formatting.cell_label(cells[0].as_dict())  # the input is as written
    sources = open_sources(p)
    assert sources is not None
    payloads = sources.prepare(p, template_for(p), "m")
    assert [json.loads(x.body)["text"] for x in payloads.payloads] == [
        "a long prompt of seven words here",
        "short one",
    ]
    assert [x.token_len for x in payloads.payloads] == [7, 2]


def test_content_types_of_body_files() -> None:
    assert guess_content_type(Path("x.json")) == "application/json"
    assert guess_content_type(Path("x.jpg")) == "image/jpeg"
    assert guess_content_type(Path("x.jsonl")) == "application/x-ndjson"
    assert guess_content_type(Path("x.tensor")) == "application/octet-stream"


def test_a_cell_past_the_memory_bound_is_refused(tmp_path: Path) -> None:
    from tui_profiler.load.sources import InputsTooLarge

    p = preset({"folder": str(PHOTOS), "encoding": "raw", "max_prepared_mb": 0.5}, tmp_path)
    sources = open_sources(p)
    assert sources is not None
    with pytest.raises(InputsTooLarge, match=r"input\.max_prepared_mb"):
        sources.prepare(p, template_for(p), "m", scale=1.0)  # a 451x300 float32 tensor is 1.5 MiB
    assert len(sources.prepare(p, template_for(p), "m", scale=0.25).payloads) == 3


# ------------------------------------------------------------------------------------ end to end


@pytest.fixture
def model_server(mobilenet_server: tuple[str, int]) -> str:
    return mobilenet_server[0]


def test_a_folder_of_photos_is_profiled_at_three_scales(model_server: str, tmp_path: Path) -> None:
    import numpy as np

    from tui_profiler.sweep import SweepRunner

    scales = [0.25, 0.5, 1.0]
    p = preset(
        {"folder": str(PHOTOS), "scales": scales, "encoding": "jpeg", "jpeg_quality": 85},
        tmp_path,
        load={"requests": 5, "warmup": 1},
    )
    runner = SweepRunner(p, output_dir=tmp_path, url=model_server)
    events: list[Any] = []
    finished = asyncio.run(runner.run(recording(events.append)))
    assert finished.status == "ok", [getattr(e, "message", "") for e in events]
    rows = read_requests(finished.session_dir)
    names = sorted(f.name for f in PHOTOS.iterdir())
    sizes = {}
    for n in names:
        with Image.open(PHOTOS / n) as im:
            sizes[n] = im.size
    assert len(rows) == 3 * 6
    for scale in scales:
        cell = [r for r in rows if float(r["input_scale"]) == scale]
        assert len(cell) == 6
        assert [int(r["input_index"]) for r in cell] == [0, 1, 2, 0, 1, 2]  # warm-up included, in turn
        for r in cell:
            name = names[int(r["input_index"])]
            assert r["status"] == "ok" and r["http_status"] == "200"  # the server decoded the real JPEG
            assert r["input_hash"] == sha12(PHOTOS / name)
            w0, h0 = sizes[name]
            assert (int(r["width"]), int(r["height"])) == (round(w0 * scale), round(h0 * scale))
            assert int(r["pixels"]) == int(r["width"]) * int(r["height"])
            # the body is the photo resized and encoded again, independently redone here
            # (the pixels only: a source file's metadata, e.g. a JPEG comment, is not sent)
            with Image.open(PHOTOS / name) as im:
                pixels = Image.fromarray(np.asarray(im.convert("RGB")))
            resized = pixels.resize((int(r["width"]), int(r["height"])), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            resized.save(buf, format="JPEG", quality=85)
            assert int(r["body_bytes"]) == len(buf.getvalue())
            assert int(r["bytes_sent"]) > int(r["body_bytes"])  # the whole request: head and body
    with open(Path(finished.session_dir) / "cells.csv", newline="") as fh:
        cells = list(csv.DictReader(fh))
    assert [float(c["input_scale"]) for c in cells] == scales
    assert all(c["pixels"] == "" for c in cells)  # three photos of three sizes: no one pixel count


class _Recorder(BaseHTTPRequestHandler):
    """Answers every POST with a small JSON document and keeps what it was sent."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, self.headers.get("Content-Type", ""), body))
        answer = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def recorder() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Handler", (_Recorder,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_body_files_are_sent_byte_for_byte_with_their_type(
    recorder: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    from tui_profiler.sweep import SweepRunner

    url, received = recorder
    bodies = tmp_path / "bodies"
    bodies.mkdir()
    (bodies / "a.json").write_bytes(b'{"inputs": [1, 2, 3]}')
    (bodies / "b.json").write_bytes(b'{"inputs": [\n 4 ]}  ')  # not re-encoded: spaces and all
    (bodies / "c.json").write_bytes(json.dumps({"inputs": list(range(500))}).encode())
    p = preset(
        {"kind": "body", "folder": "bodies", "order": "random", "seed": 3},
        tmp_path,
        request={"template": "torchserve", "model_name": "m"},
        load={"requests": 12, "warmup": 0},
    )
    finished = asyncio.run(SweepRunner(p, output_dir=tmp_path / "out", url=url).run(recording()))
    assert finished.status == "ok"
    rows = read_requests(finished.session_dir)
    files = sorted(bodies.iterdir())
    assert len(rows) == len(received) == 12
    assert len({r["input_index"] for r in rows}) > 1  # drawn, not one
    for row, (path, content_type, body) in zip(rows, received, strict=True):  # concurrency 1: in order
        source = files[int(row["input_index"])]
        assert body == source.read_bytes()
        assert path == "/predictions/m" and content_type == "application/json"
        assert row["input_hash"] == sha12(source) and int(row["body_bytes"]) == len(body)
        assert row["pixels"] == "" and row["token_len"] == ""


def test_text_lines_are_sent_through_a_json_template(
    recorder: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    from tui_profiler.sweep import SweepRunner

    url, received = recorder
    (tmp_path / "prompts.jsonl").write_text(
        '{"prompt": "Why is the sky blue"}\n{"text": "Write a haiku about the sea"}\n'
    )
    p = preset(
        {"kind": "text", "encoding": "text", "files": ["prompts.jsonl"], "token_lens": [4, 8]},
        tmp_path,
        request={
            "template": {"path": "/generate", "body": "json", "json": {"prompt": "{input}"}},
            "model_name": "m",
        },
        load={"requests": 4, "warmup": 0},
    )
    finished = asyncio.run(SweepRunner(p, output_dir=tmp_path / "out", url=url).run(recording()))
    assert finished.status == "ok"
    rows = read_requests(finished.session_dir)
    assert len(rows) == len(received) == 8
    sent = [json.loads(body)["prompt"] for _, _, body in received]
    assert sent[:4] == ["Why is the sky", "Write a haiku about", "Why is the sky", "Write a haiku about"]
    assert sent[4] == "Why is the sky blue Why is the"  # padded with its own words to 8
    assert [r["token_len"] for r in rows] == ["4"] * 4 + ["8"] * 4
    assert [r["input_index"] for r in rows] == ["0", "1", "0", "1"] * 2
    assert rows[0]["input_hash"] == hashlib.sha256(b"Why is the sky blue").hexdigest()[:12]
