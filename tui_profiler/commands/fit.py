"""`tui-profiler fit`: latency models per container–task pair, held-out error, prediction, recommendation."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tui_profiler.errors import ExitCode

TARGET_CHOICES = ("latency_s", "p50", "p99", "throughput", "cpu", "ttft", "ttft_p99", "tpot", "tpot_p99")
SPLIT_CHOICES = ("leave-config-out", "extrapolate-input", "random")
_NUMERIC_FIELDS = (
    "cpu_cores",
    "mem_cap_gb",
    "pixels",
    "token_len",
    "concurrency",
    "rate",
    # generative targets: TTFT is a function of prompt tokens, TPOT of context tokens (prompt + output)
    "prompt_tokens",
    "context_tokens",
    "output_len",
    "output_tokens",
)


_LABEL_FIELDS = ("gpu_mode", "model", "task", "host_class")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fit",
        help="fit latency models of resources and input size; predict; recommend a configuration",
        description="Fit latency models per model × task × GPU mode (× host class) from session folders, requests.csv / "
        "cells.csv, or AC-Prof CSVs (wide or long), report held-out error, predict and recommend.",
    )
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="session folder, requests.csv, cells.csv, or AC-Prof CSV"
    )
    p.add_argument(
        "--target",
        choices=TARGET_CHOICES,
        default="latency_s",
        help="quantity to model (default: latency_s); cpu: the target's CPU-seconds per request (requests.csv "
        "cpu_ms, from its cgroup) against input size and CPUs; generative sessions: ttft / ttft_p99 (time to first "
        "token, the cell's median / p99, from prompt tokens and CPUs), tpot / tpot_p99 (time per output "
        "token, from context tokens = prompt + output, and CPUs)",
    )
    p.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        default=None,
        help="held-out split used for the test error and for model selection (default: forward validation, "
        "i.e. extrapolate-input, for a group asked to predict or recommend outside its trained input range; "
        "leave-config-out otherwise)",
    )
    p.add_argument(
        "--json", metavar="OUT", help="write the full report (and predictions/recommendation) as JSON"
    )
    p.add_argument(
        "--predict",
        metavar="POINT",
        action="append",
        default=[],
        help="predict one point, e.g. 'cpu_cores=3,mem_cap_gb=6,gpu_mode=off,pixels=40000' (repeatable)",
    )
    p.add_argument(
        "--predict-csv",
        metavar="POINTS.csv",
        help="predict every row (cpu_cores, mem_cap_gb, gpu_mode, pixels|token_len)",
    )
    p.add_argument(
        "--out", metavar="PRED.csv", help="where --predict-csv writes POINTS plus the prediction column"
    )
    p.add_argument(
        "--recommend",
        action="store_true",
        help="the cheapest configuration predicted to meet every SLO given (--slo-p99, --slo-ttft, --slo-tpot)",
    )
    p.add_argument(
        "--rps",
        type=float,
        metavar="R",
        help="with --recommend: the cheapest configuration that serves R requests/s within the SLO, from "
        "the sessions' capacity.csv (`run --find-max-load`; the SLO is the search's own [slo])",
    )
    p.add_argument(
        "--slo-p99", type=float, metavar="SECONDS", help="latency SLO for --recommend (p99, seconds)"
    )
    p.add_argument(
        "--slo-ttft",
        type=float,
        metavar="SECONDS",
        help="time-to-first-token SLO for --recommend (p99, seconds; needs --token-len, the prompt length)",
    )
    p.add_argument(
        "--slo-tpot",
        type=float,
        metavar="SECONDS",
        help="time-per-output-token SLO for --recommend (p99, seconds; needs --token-len and --output-len)",
    )
    p.add_argument(
        "--output-len",
        type=float,
        metavar="N",
        help="output tokens for --slo-tpot / --target tpot (the context is --token-len + N)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--pixels", type=float, metavar="N", help="input size for --recommend (image models)")
    size.add_argument("--token-len", type=float, metavar="N", help="input size for --recommend (text models)")
    size.add_argument(
        "--size",
        type=float,
        metavar="N",
        help="input size for --recommend in the data's own unit (e.g. a wide file's text_chars; with --rps: "
        "the input scale)",
    )
    p.add_argument("--model", help="which model to predict / recommend for, when several are fitted")
    p.add_argument(
        "--host-class",
        metavar="LABEL",
        help="which host class (cells.csv host_class) to predict / recommend for, when several are fitted",
    )
    p.add_argument(
        "--pool-hosts",
        action="store_true",
        help="fit one model across host classes instead of one per host class",
    )
    p.add_argument("--cost-cpu", type=float, default=None, help="cost weight per CPU core (default 1.0)")
    p.add_argument("--cost-gb", type=float, default=None, help="cost weight per GB of memory (default 0.125)")
    p.add_argument("--cost-gpu", type=float, default=None, help="cost weight per GPU (default 20)")
    p.add_argument(
        "--allow-extrapolation",
        action="store_true",
        help="let --recommend pick CPU counts outside the measured range",
    )
    p.add_argument("--no-plot", action="store_true", help="omit the residual plots")
    p.set_defaults(func=_run)


def parse_point(text: str, size_fields: tuple[str, ...] = ()) -> dict[str, object]:
    """'cpu_cores=3,mem_cap_gb=6,gpu_mode=off,pixels=40000' -> dict; ValueError naming the bad field.
    `size_fields`: further input-size names the data brings (a wide file's own first column)."""
    numeric = (*_NUMERIC_FIELDS, *size_fields)
    point: dict[str, object] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"--predict: {part!r} — expected FIELD=VALUE")
        key, value = (x.strip() for x in part.split("=", 1))
        if key in numeric:
            try:
                point[key] = float(value)
            except ValueError:
                raise ValueError(f"{key}: {value!r} — a number is required") from None
        elif key in _LABEL_FIELDS:
            point[key] = value
        else:
            raise ValueError(f"{key}: unknown field — allowed: {', '.join((*numeric, *_LABEL_FIELDS))}")
    if "cpu_cores" not in point:
        raise ValueError("cpu_cores: missing from --predict")
    return point


def _run(args: argparse.Namespace) -> int:
    try:
        return _main(args)
    except (ValueError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"tui-profiler fit: {msg}", file=sys.stderr)
        return ExitCode.USAGE


def _check_args(args: argparse.Namespace) -> None:
    if args.host_class is not None and args.pool_hosts:
        raise ValueError("--host-class: not used with --pool-hosts (one model spans every host class)")
    if args.host_class is not None and not args.host_class.strip():
        raise ValueError("--host-class: empty — give the label a fleet host was given")
    if args.out and not args.predict_csv:
        raise ValueError("--out: only used with --predict-csv")
    if args.predict_csv and not args.out:
        raise ValueError("--out: required with --predict-csv (where PRED.csv goes)")
    token_slos = args.slo_ttft is not None or args.slo_tpot is not None
    if getattr(args, "rps", None) is not None:
        _check_rps_args(args)
        return
    if not args.recommend and (token_slos or args.slo_p99 is not None):
        flag = next(f for f, v in _slo_flags(args) if v is not None)
        raise ValueError(f"{flag}: only used with --recommend")
    for flag, value in _slo_flags(args):
        if value is not None and not value > 0:
            raise ValueError(f"{flag}: {value:g} — must be > 0 seconds")
    if args.output_len is not None and not args.output_len > 0:
        raise ValueError(f"--output-len: {args.output_len:g} — must be > 0")
    if args.recommend and token_slos:
        if args.token_len is None:
            flag = "--slo-ttft" if args.slo_ttft is not None else "--slo-tpot"
            raise ValueError(f"--token-len: {flag} needs the prompt length (--token-len N)")
        if args.slo_tpot is not None and args.output_len is None:
            raise ValueError(
                "--output-len: --slo-tpot needs the output length (the context is prompt + output)"
            )
    elif args.recommend:
        if args.slo_p99 is None:
            raise ValueError("--slo-p99: required with --recommend (or --slo-ttft / --slo-tpot)")
        if args.pixels is None and args.token_len is None and args.size is None:
            raise ValueError(
                "--pixels: --recommend needs the input size (--pixels N, --token-len N or --size N)"
            )
    _costs(args)  # checked here, before any fit


def _costs(args: argparse.Namespace) -> dict[str, float]:
    """The recommendation's cost weights: --cost-cpu, --cost-gb, --cost-gpu or their defaults (a negative one
    is a one-line ValueError naming the flag)."""
    from tui_profiler.analysis.recommend import DEFAULT_COST_CPU, DEFAULT_COST_GB, DEFAULT_COST_GPU

    defaults = {"cost_cpu": DEFAULT_COST_CPU, "cost_gb": DEFAULT_COST_GB, "cost_gpu": DEFAULT_COST_GPU}
    costs = {}
    for name, default in defaults.items():
        v = getattr(args, name)
        if v is not None and v < 0:
            raise ValueError(f"--{name.replace('_', '-')}: {v:g} — must be >= 0")
        costs[name] = default if v is None else float(v)
    return costs


def _check_rps_args(args: argparse.Namespace) -> None:
    """--rps: a recommendation from capacity.csv, whose SLO is the capacity search's own."""
    if not args.recommend:
        raise ValueError("--rps: only used with --recommend")
    if not args.rps > 0:
        raise ValueError(f"--rps: {args.rps:g} — must be > 0 requests/s")
    for flag, value in _slo_flags(args):
        if value is not None:
            raise ValueError(f"{flag}: not used with --rps (the SLO is the capacity search's own [slo])")
    _costs(args)  # checked here, before any fit


def _recommend_rps(args: argparse.Namespace) -> int:
    """--recommend --rps R: the cheapest configuration whose measured capacity serves R requests/s."""
    from tui_profiler.analysis.capacity import read_capacity, recommend_capacity
    from tui_profiler.analysis.fit import json_safe

    for path in args.paths:
        if not Path(path).exists():
            raise ValueError(f"{path}: no such file or folder")
    size_column, size = next(
        ((c, v) for c, v in (("pixels", args.pixels), ("token_len", args.token_len), ("input_scale", args.size))
         if v is not None),
        (None, None),
    )  # fmt: skip
    rec = recommend_capacity(
        read_capacity(args.paths),
        args.rps,
        size_column=size_column,
        size=size,
        model=args.model,
        host_class=args.host_class,
        **_costs(args),
    )
    print("\n".join(rec.summary_lines()))
    if args.json:
        Path(args.json).write_text(json.dumps(json_safe({"recommendation": rec.to_dict()}), indent=2))
        print(f"wrote {args.json}")
    return ExitCode.OK


def _slo_flags(args: argparse.Namespace) -> list[tuple[str, float | None]]:
    return [("--slo-p99", args.slo_p99), ("--slo-ttft", args.slo_ttft), ("--slo-tpot", args.slo_tpot)]


def _token_size(target: str, args: argparse.Namespace) -> tuple[str, float] | None:
    """A generative target's size column and the size asked (--token-len, + --output-len for TPOT)."""
    from tui_profiler.analysis.fit import CONTEXT_SIZE, TOKEN_TARGETS

    spec = TOKEN_TARGETS.get(target)
    if spec is None or args.token_len is None:
        return None
    if spec.size_column == CONTEXT_SIZE:
        return None if args.output_len is None else (CONTEXT_SIZE, args.token_len + args.output_len)
    return spec.size_column, args.token_len


def _check_size_flag(args: argparse.Namespace, tidy: object) -> None:
    """Fail before fitting when --pixels / --token-len names a size the data does not have."""
    given = "pixels" if args.pixels is not None else "token_len"
    other = "token_len" if given == "pixels" else "pixels"
    data = tidy if not args.model else tidy[tidy["model"] == args.model]  # type: ignore[index]
    if data[given].notna().sum() == 0 and data[other].notna().sum() > 0:  # type: ignore[index]
        raise ValueError(f"{given}: the data has no {given} but {other}; give --{other.replace('_', '-')}")


def _recommend_slos(
    args: argparse.Namespace, tidy: object, paths: list[str], size_column: str | None
) -> dict[str, object]:
    """--recommend with --slo-ttft / --slo-tpot (and --slo-p99): every SLO from its own fitted model."""
    import pandas as pd

    from tui_profiler.analysis.fit import fit_frame, recommendation_query
    from tui_profiler.analysis.importers import fit_rows
    from tui_profiler.analysis.recommend import (
        Objective,
        recommend_slos,
    )

    assert isinstance(tidy, pd.DataFrame)
    rows = fit_rows(tidy)
    asked: list[tuple[str, float, str, float]] = []  # target, slo, size column, size
    if args.slo_p99 is not None:
        has_p99 = bool((rows["row_kind"] == "request").any() or rows["p99_s"].notna().any())
        asked.append(
            ("p99" if has_p99 else "latency_s", args.slo_p99, size_column or "token_len", args.token_len)
        )
    for target, slo in (("ttft_p99", args.slo_ttft), ("tpot_p99", args.slo_tpot)):
        if slo is not None:
            column_size = _token_size(target, args)
            assert column_size is not None  # _check_args made sure of the sizes
            asked.append((target, slo, *column_size))
    objectives = []
    for target, slo, column, size in asked:
        query = recommendation_query(size, column, args.model, args.host_class)
        report = fit_frame(
            tidy, target=target, split=args.split, sources=paths, queries=[query], pool_hosts=args.pool_hosts
        )
        objectives.append(Objective(report, slo, size))
    rec = recommend_slos(
        objectives,
        rows,
        model=args.model,
        host_class=args.host_class,
        **_costs(args),
        allow_extrapolation=args.allow_extrapolation,
    )
    print("\n".join(rec.summary_lines()))
    return rec.to_dict()


def _main(args: argparse.Namespace) -> int:
    _check_args(args)
    if getattr(args, "rps", None) is not None:
        return _recommend_rps(args)
    import pandas as pd

    from tui_profiler.analysis.fit import (
        TOKEN_TARGETS,
        fit_frame,
        json_safe,
        predicted_column,
        prediction_queries,
        recommendation_query,
    )
    from tui_profiler.analysis.importers import fit_rows, read_paths, size_columns
    from tui_profiler.analysis.recommend import (
        recommend,
    )
    from tui_profiler.commands.fit_report import render

    paths = [str(p) for p in args.paths]
    tidy = read_paths(paths)
    extra_sizes = tuple(c for c in size_columns(tidy) if c not in ("pixels", "token_len"))
    points = [parse_point(t, extra_sizes) for t in args.predict]
    if args.model:
        points = [{"model": args.model} | p for p in points]
    if args.host_class:
        points = [{"host_class": args.host_class} | p for p in points]
    points_df = None
    if args.predict_csv:
        try:
            points_df = pd.read_csv(args.predict_csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise ValueError(f"{args.predict_csv}: not a readable CSV ({str(exc).splitlines()[0]})") from exc
        if "cpu_cores" not in points_df.columns:
            raise ValueError(f"{args.predict_csv}: cpu_cores: column missing")
        if args.model and "model" not in points_df.columns:
            points_df.insert(0, "model", args.model)
        if args.host_class and "host_class" not in points_df.columns:
            points_df.insert(0, "host_class", args.host_class)

    token_slos = args.slo_ttft is not None or args.slo_tpot is not None
    if args.recommend and args.size is None and not token_slos:
        _check_size_flag(args, tidy)
    # What will be asked decides which validation chooses each group's form (unless --split is given).
    queries = prediction_queries(pd.DataFrame(points)) if points else []
    if points_df is not None:
        queries += prediction_queries(points_df)
    size_column = "pixels" if args.pixels is not None else "token_len" if args.token_len is not None else None
    rec_queries = []
    if args.recommend:
        size_value = next(v for v in (args.pixels, args.token_len, args.size) if v is not None)
        asked = _token_size(args.target, args) if args.target in TOKEN_TARGETS else (size_column, size_value)
        if asked is not None:
            rec_queries = [recommendation_query(asked[1], asked[0], args.model, args.host_class)]
    pool = args.pool_hosts
    report = fit_frame(
        tidy,
        target=args.target,
        split=args.split,
        sources=paths,
        queries=[*queries, *rec_queries],
        pool_hosts=pool,
    )
    print(render(report, plots=not args.no_plot, color=sys.stdout.isatty()))
    payload = report.to_dict()
    col = predicted_column(args.target)

    if points:
        pred = report.predict(pd.DataFrame(points))
        payload["predictions"] = json.loads(pred.to_json(orient="records"))
        for _, row in pred.iterrows():
            given = ", ".join(
                f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                for k in points[0]
                if k in row and not pd.isna(row[k])
            )
            warn = f"   WARNING: {row['warning']}" if row["warning"] else ""
            print(f"predict {given}: {col} = {row[col]:.4g}{warn}")
    if points_df is not None:
        pred = report.predict(points_df)
        for i, w in enumerate(pred["warning"]):
            if w:
                print(f"warning: {args.predict_csv} row {i + 1}: {w}", file=sys.stderr)
        pred.drop(columns=["warning"]).to_csv(args.out, index=False)
        print(f"wrote {len(pred)} predictions to {args.out}")

    if args.recommend and token_slos:
        rec_payload = _recommend_slos(args, tidy, paths, size_column)
        payload["recommendation"] = rec_payload
    elif args.recommend:
        rows = fit_rows(tidy)
        has_p99 = bool((rows["row_kind"] == "request").any() or rows["p99_s"].notna().any())
        rec_report = report
        if has_p99 and args.target != "p99":
            rec_report = fit_frame(
                tidy, target="p99", split=args.split, sources=paths, queries=rec_queries, pool_hosts=pool
            )
        elif not has_p99 and args.target != "latency_s":
            rec_report = fit_frame(
                tidy,
                target="latency_s",
                split=args.split,
                sources=paths,
                queries=rec_queries,
                pool_hosts=pool,
            )
        rec = recommend(
            rec_report,
            rows,
            slo_s=args.slo_p99,
            size=size_value,
            size_column=size_column,
            model=args.model,
            host_class=args.host_class,
            **_costs(args),
            allow_extrapolation=args.allow_extrapolation,
        )
        print("\n".join(rec.summary_lines()))
        payload["recommendation"] = rec.to_dict()

    if args.json:
        Path(args.json).write_text(json.dumps(json_safe(payload), indent=2))
        print(f"wrote {args.json}")
    return ExitCode.OK
