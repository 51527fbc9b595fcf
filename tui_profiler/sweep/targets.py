"""What the sweep starts for a cell: the `TargetSpec` (image, model-server command line, caps, mounts,
readiness) built from the preset and the cell, where the image comes from, and the preset a `--url` run
plans with."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tui_profiler.config import hubs
from tui_profiler.config.model import Preset, ReadinessConfig, TargetConfig
from tui_profiler.plan import Cell
from tui_profiler.runtime.base import ProbeRequest, TargetFailed, TargetSpec
from tui_profiler.session.schema import CellStatus


@dataclass(frozen=True, slots=True)
class GivenImage:
    """An image the preset names: nothing to build."""

    name: str


@dataclass(frozen=True, slots=True)
class ImageBuild:
    """An image to build first. `build` blocks (minutes, the first time) and returns the image's tag;
    `note` says what it builds, for the log."""

    build: Callable[[], str]
    note: str


ImageSource = GivenImage | ImageBuild


def target_config(preset: Preset) -> TargetConfig:
    """The preset's [target], or the defaults (our own model server) when it has none."""
    return preset.target or TargetConfig()


def metrics_ports(preset: Preset) -> tuple[int, ...]:
    """The port of the target's metrics endpoint when it is not the serving port (published too)."""
    target = target_config(preset)
    port = target.metrics.port if target.metrics is not None else None
    return (port,) if port is not None and port != target.port else ()


def readiness(preset: Preset) -> ReadinessConfig:
    return target_config(preset).readiness


def image_source(preset: Preset) -> ImageSource:
    """Where the docker runtime's image comes from: `target.image`, a build of `target.dockerfile`, the
    preset's `image`, or our model-server image (built once; the layer cache makes it quick)."""
    target = target_config(preset)
    if target.image:
        return GivenImage(target.image)
    if target.dockerfile:
        # Relative paths are relative to the preset file, like everything else it names.
        here = preset.path.parent if preset.path else Path.cwd()
        dockerfile = here / target.dockerfile
        context = here / target.context if target.context else None
        build_args = dict(target.build_args) or None

        def build_from_dockerfile() -> str:
            from tui_profiler import images

            return images.build_image_from_dockerfile(dockerfile, context, build_args)

        return ImageBuild(build_from_dockerfile, f"building the target image from {dockerfile}")
    if preset.image:
        return GivenImage(preset.image)

    variant = "tf" if hubs.hub_of(preset.model) == "tf" else "torch"  # tf: models: TensorFlow's image

    def ensure_server_image() -> str:
        from tui_profiler import images

        return images.ensure_server_image(variant=variant)

    return ImageBuild(
        ensure_server_image,
        f"checking the model-server image{' (TensorFlow variant)' if variant == 'tf' else ''} (built once; "
        "the layer cache makes it quick)",
    )


def image_failure(exc: Exception) -> TargetFailed:
    """An image that could not be built or found: the group's cells fail with BUILD_FAILED and its first line."""
    text = str(exc)
    return TargetFailed(
        CellStatus.BUILD_FAILED, f"image: {text.splitlines()[0] if text else type(exc).__name__}"
    )


def server_command(preset: Preset) -> list[str] | None:
    """The target's command line: the [target]'s own, or our model server's arguments for the preset's model
    when the [target] names no image of its own (only its readiness, say); None: the image's default
    command."""
    t = preset.target
    command = t.command if t is not None else None
    if command is None and not (t is not None and (t.image or t.dockerfile)) and preset.model:
        model, _ = hub_model(preset)
        command = ["--model", model, "--weights", preset.weights, *hub_args(preset), *preset.server_args]
    return list(command) if command is not None else None


def hub_model(preset: Preset) -> tuple[str, list[tuple[str, str]]]:
    """An hf:/tf: model's string as the server in the container sees it, and the read-only mount of its local
    folder (relative paths are the preset file's, like everything it names); other models as they are."""
    return hubs.container_model(preset.model, preset.path.parent if preset.path else None)


def hub_args(preset: Preset) -> list[str]:
    """The server flags an hf:/tf: model adds: its task, and the name it answers to (the preset's model)."""
    if hubs.hub_of(preset.model) is None:
        return []
    return [*(["--task", preset.task] if preset.task else []), "--served-model-name", preset.model]


def probe_request(preset: Preset) -> ProbeRequest | None:
    """What a `request` readiness probe sends: the preset's own request at its smallest input size,
    rendered through its template, judged by the template's check; None for the other probe kinds.
    Generates and encodes an input (milliseconds for the smallest one): call it off the event loop."""
    if readiness(preset).kind != "request":
        return None
    from tui_profiler.load.inputs import InputSpec
    from tui_profiler.load.sources import open_sources
    from tui_profiler.load.template import build_payload, template_for

    inp = preset.input
    smallest = min(inp.sizes) if inp.sized_by_plan else None
    token_len = int(smallest) if smallest is not None and inp.sized_by_tokens else None
    scale = float(smallest) if smallest is not None and not inp.sized_by_tokens else None
    output_len = min(inp.output_lens) if inp.output_lens else None  # the shortest generation answers first
    template = template_for(preset)
    model_name = template.model_name or preset.model
    sources = open_sources(preset)
    if sources is not None:  # the user's own first input, at the smallest size: what the cells will send
        first = dataclasses.replace(sources, inputs=sources.inputs[:1])
        payload = first.prepare(
            preset, template, model_name, scale=scale, token_len=token_len, output_len=output_len
        ).first
    else:
        payload = build_payload(
            InputSpec.for_cell(inp, scale=scale, token_len=token_len), template, model_name
        )
    headers = dict(payload.headers)
    if payload.content_type and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = payload.content_type
    return ProbeRequest(
        method=payload.method,
        path=payload.path,
        headers=headers,
        body=payload.body,
        check=template.check,
        timeout_s=preset.load.timeout_s,
    )


def target_spec(preset: Preset, cell: Cell, *, image: str, session_id: str) -> TargetSpec:
    """What to start for `cell`'s container group, under the cell's caps (with a `request` readiness
    probe, its request is rendered here: call it off the event loop)."""
    t = preset.target
    env = dict(t.env) if t is not None else {}
    if cell.gpus and t is not None:
        env.update(t.gpu_env)
    return TargetSpec(
        session_id=session_id,
        image=image,
        model=preset.model,
        weights=preset.weights,
        port=target_config(preset).port,
        extra_ports=metrics_ports(preset),
        command=server_command(preset),
        env=env,
        mounts=[*(t.mount_pairs() if t is not None else []), *hub_model(preset)[1]],
        cpus=cell.cpus,
        memory_gb=cell.memory_gb,
        gpus=cell.gpus,
        cpuset=preset.resources.cpuset,
        threads=preset.resources.threads,
        readiness=readiness(preset),
        probe_request=probe_request(preset),
    )


def url_preset(preset: Preset) -> Preset:
    """The preset a `--url` run plans with: one uncapped resource config (a running server has its own)."""
    resources = preset.resources.model_copy(
        update={"cpus": [None], "memory_gb": [None], "gpus": [0], "pairing": "grid"}
    )
    planned = preset.model_copy(update={"resources": resources})
    planned.path = preset.path
    return planned
