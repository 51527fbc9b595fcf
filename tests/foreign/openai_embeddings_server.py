"""A small OpenAI-embeddings-shaped server (stdlib only) for the text-input tests.

`python tests/foreign/openai_embeddings_server.py PORT` serves on 127.0.0.1:PORT:
- GET  /health          200 (TEI's readiness path)
- POST /v1/embeddings   {"model": str, "input": str | [str]} -> {"object": "list", "data": [{"object":
                        "embedding", "index": i, "embedding": [8 floats]}], "model", "usage"}; 400 for a
                        body that is not such a request.
Each embedding is computed from the text (a pass over its words), so a longer text costs more. Like TEI's
OpenAI route it sends no Server-Timing header.
"""

from __future__ import annotations

import json
import math
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIM = 8


def embed(text: str) -> list[float]:
    vec = [0.0] * DIM
    for i, word in enumerate(text.split()):
        vec[(i + len(word)) % DIM] += sum(map(ord, word)) / 1000.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real servers

    def log_message(self, fmt: str, *args: object) -> None:  # quiet
        return

    def _send(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/v1/embeddings":
            self._send(404, {"error": "not found"})
            return
        try:
            doc = json.loads(body)
            texts = doc["input"] if isinstance(doc["input"], list) else [doc["input"]]
            if not isinstance(doc.get("model"), str) or not all(isinstance(t, str) for t in texts):
                raise ValueError("model and input must be strings")
        except (ValueError, KeyError, TypeError) as exc:
            self._send(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
            return
        tokens = sum(len(t.split()) for t in texts)
        self._send(
            200,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": embed(t)} for i, t in enumerate(texts)
                ],
                "model": doc["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()
