"""A tiny TensorFlow-Serving-shaped REST server (stdlib only) for the foreign-image tests.

It speaks the subset of TF Serving's REST API that the `tfserving` template uses:
- GET  /v1/models/{name}           404 until the "model" is loaded, then 200 with a model_version_status
- POST /v1/models/{name}:predict   {"instances": [...]} -> {"predictions": [[...], ...]}
The "model" is read from /models/{MODEL_NAME}/1/model.json (mounted read-only), like TF Serving's layout.
Its compute grows with the input size (a pass over every value of every instance). Like TF Serving, it
sends no Server-Timing header, so the profiler's server-side columns must be 'not available'.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_NAME = os.environ.get("MODEL_NAME", "model")
MODEL_BASE = os.environ.get("MODEL_BASE_PATH", "/models")
LOAD_DELAY_S = float(os.environ.get("LOAD_DELAY_S", "1.0"))
STATE: dict = {"model": None}


def load_model() -> None:
    path = os.path.join(MODEL_BASE, MODEL_NAME, "1", "model.json")
    time.sleep(LOAD_DELAY_S)  # stands in for reading and initialising real weights
    with open(path, encoding="utf-8") as f:
        STATE["model"] = json.load(f)
    print(f"Successfully loaded servable version {{name: {MODEL_NAME} version: 1}}", flush=True)


def flat(values, out: list) -> None:
    for v in values:
        if isinstance(v, list):
            flat(v, out)
        else:
            out.append(float(v))


def predict(instance, classes: int, rounds: int) -> list[float]:
    xs: list[float] = []
    flat(instance if isinstance(instance, list) else [instance], xs)
    scores = [0.0] * classes
    for _ in range(rounds):  # cost proportional to the input size
        for i, x in enumerate(xs):
            scores[i % classes] += x * x
    total = sum(math.exp(s / (len(xs) or 1)) for s in scores)
    return [math.exp(s / (len(xs) or 1)) / total for s in scores]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like TF Serving

    def log_message(self, fmt: str, *args) -> None:  # quiet
        return

    def _send(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == f"/v1/models/{MODEL_NAME}":
            if STATE["model"] is None:
                self._send(404, {"error": f"Could not find any versions of model {MODEL_NAME}"})
            else:
                self._send(200, {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]})
        else:
            self._send(404, {"error": "Malformed request"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if self.path != f"/v1/models/{MODEL_NAME}:predict":
            self._send(404, {"error": "Malformed request"})
            return
        model = STATE["model"]
        if model is None:
            self._send(503, {"error": "model not loaded"})
            return
        try:
            doc = json.loads(raw)
            instances = doc["instances"]
        except (ValueError, KeyError, TypeError):
            self._send(400, {"error": "JSON object with 'instances' expected"})
            return
        preds = [predict(inst, model["classes"], model["rounds"]) for inst in instances]
        self._send(200, {"predictions": preds})


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8501
    threading.Thread(target=load_model, daemon=True).start()
    print(f"Exporting HTTP/REST API at:localhost:{port} ...", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
