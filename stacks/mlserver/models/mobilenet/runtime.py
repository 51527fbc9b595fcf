"""An MLServer custom runtime: a torchvision classifier with random weights behind the KServe V2 protocol.

The request's first input is a batch of CHW float32 images (any height and width); the answer's one output,
`logits`, is the model's [batch, 1000] scores. `parameters.extra.arch` in model-settings.json names the
torchvision model (default mobilenet_v3_small). Inference runs in MLServer's process (parallel_workers = 0
in settings.json): every CPU of the container's cap goes to the model, with no worker-process hop.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torchvision
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.logging import logger
from mlserver.types import InferenceRequest, InferenceResponse


class TorchvisionModel(MLModel):
    async def load(self) -> bool:
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        arch = str(extra.get("arch", "mobilenet_v3_small"))
        t0 = time.perf_counter()
        self._model = torchvision.models.get_model(arch, weights=None).eval()
        logger.info("loaded %s (random weights) in %.3f s", arch, time.perf_counter() - t0)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        batch = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        if batch.ndim == 3:  # one CHW image without the batch axis
            batch = batch[None]
        with torch.inference_mode():
            logits = self._model(torch.from_numpy(np.ascontiguousarray(batch))).numpy()
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output("logits", logits)],
        )
