"""A LitServe server around a torchvision classifier with random weights.

POST /predict with {"input": "<base64 image>"} (any format Pillow reads, any size): the server decodes
it, scales it to [0, 1] as a CHW float tensor and answers {"output": [top-5 class ids]}.
GET /health answers 200 only once the worker has run `setup` (the model is loaded), 503 before.
"""

# No `from __future__ import annotations`: LitServe hands decode_request's annotation to FastAPI as a type.
import argparse
import base64
import io
import time
from typing import Any

import litserve as ls
import numpy as np
import torch
import torchvision
from PIL import Image
from pydantic import BaseModel


class PredictRequest(BaseModel):
    """The JSON body; LitServe takes `decode_request`'s annotation as the request type FastAPI parses."""

    input: str  # a base64-encoded image


class TorchvisionAPI(ls.LitAPI):
    def __init__(self, arch: str) -> None:
        super().__init__()
        self.arch = arch

    def setup(self, device: str) -> None:
        t0 = time.perf_counter()
        self.model = torchvision.models.get_model(self.arch, weights=None).eval().to(device)
        self.device = device
        print(
            f"loaded {self.arch} (random weights) on {device} in {time.perf_counter() - t0:.3f} s", flush=True
        )

    def decode_request(self, request: PredictRequest) -> torch.Tensor:
        image = Image.open(io.BytesIO(base64.b64decode(request.input))).convert("RGB")
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x.to(self.device))

    def encode_response(self, output: torch.Tensor) -> dict[str, Any]:
        return {"output": output[0].topk(5).indices.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18", help="a torchvision classification model name")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="inference worker processes")
    args = parser.parse_args()
    server = ls.LitServer(TorchvisionAPI(args.arch), accelerator="cpu", workers_per_device=args.workers)
    # No client.py written next to the server: the root filesystem is read-only under tui-profiler.
    server.run(host="0.0.0.0", port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
