"""`tui-profiler images build [--rebuild] [--measure]` and `tui-profiler images list`."""

from __future__ import annotations

import argparse
import sys
import time

from tui_profiler.errors import ExitCode


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("images", help="build or list the model-server image")
    isub = p.add_subparsers(dest="images_command", metavar="ACTION")
    b = isub.add_parser("build", help="build the server image (from the layer cache when possible)")
    b.add_argument("--rebuild", action="store_true", help="build even when the image is up to date")
    b.add_argument(
        "--measure",
        action="store_true",
        help="build the measuring image (tui-profiler without model or UI, run next to targets on other hosts)",
    )
    b.add_argument(
        "--pretrained",
        default="",
        metavar="NAMES",
        help="bake these catalog models' pretrained weights into the image (needs network)",
    )
    b.add_argument(
        "--variant",
        choices=["torch", "tf"],
        default="torch",
        help="the server image's variant: torch (+ transformers, the default) or tf (TensorFlow, for tf: models)",
    )
    b.set_defaults(func=_build)
    ls = isub.add_parser("list", help="list tui-profiler's images (tag, size, created)")
    ls.set_defaults(func=_list)

    def usage(args: argparse.Namespace) -> int:
        p.print_help()
        return ExitCode.USAGE

    p.set_defaults(func=usage)


def _build(args: argparse.Namespace) -> int:
    from tui_profiler.images import ImageBuildError, ensure_server_image

    start = time.perf_counter()

    def progress(line: str) -> None:
        print(f"[images {time.perf_counter() - start:6.1f}s] {line}", flush=True)

    if args.measure and args.pretrained:
        print(
            "tui-profiler images build: error: --pretrained: the measuring image holds no model",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    try:
        if args.measure:
            from tui_profiler.fleet.image import ensure_measure_image

            tag = ensure_measure_image(progress=progress, rebuild=args.rebuild)
        else:
            tag = ensure_server_image(
                progress=progress, rebuild=args.rebuild, pretrained=args.pretrained, variant=args.variant
            )
    except ImageBuildError as exc:
        print(f"tui-profiler images build: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{tag} ready in {time.perf_counter() - start:.1f} s")
    return ExitCode.OK


def _list(args: argparse.Namespace) -> int:
    from tui_profiler.images import ImageBuildError, list_images

    try:
        rows = list_images()
    except ImageBuildError as exc:
        print(f"tui-profiler images list: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not rows:
        print("no tui-profiler images yet: run `tui-profiler images build`")
        return ExitCode.OK
    print(f"{'TAG':44} {'KIND':12} {'SIZE':>9} {'CREATED':19}")
    for r in rows:
        size = f"{r['size_bytes'] / 1e9:.2f} GB" if r["size_bytes"] is not None else ""
        print(f"{r['tag']:44} {r['kind']:12} {size:>9} {r['created']:19}")
    return ExitCode.OK
