"""A small, real HTTP server for the load generator's protocol tests (run as a subprocess).

`python tests/foreign/protocol_server.py PORT` serves on 127.0.0.1:PORT:
- POST /predict            small JSON + Server-Timing (decode/infer/encode)
- POST /sleep/{ms}         answers after `ms` milliseconds
- POST /stall/{key}/{n}/{ms}  the n-th request (1-based) under `key` sleeps `ms` ms; the others answer at once.
  One request at a time is served per key (a lock), like a single-worker model server, so a stall
  delays everything behind it; `?serial=0` drops the lock.
- POST /chunked            a chunked JSON answer
- POST /close              answers with `Connection: close`
- POST /status/{code}      answers that status
- POST /text               a non-JSON answer
- POST /timing/{variant}   an odd Server-Timing header (see TIMINGS)
- GET  /count/{key}        how many requests `key` has seen
- POST /echo               echoes the request's method, path, headers and body length as JSON
- GET  /last               the last /echo request, as /echo answered it
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

TIMINGS = {
    "total": "decode;dur=1, infer;dur=2, total;dur=10",
    "quoted": 'infer;desc="a, b; c";dur=3.5, encode;dur=0.5',
    "junk": "infer;dur=abc, ;dur=1, decode;dur=-1, encode;dur=2, cache;desc=hit",
    "none": "",
}

counts: dict[str, int] = {}
locks: dict[str, asyncio.Lock] = {}


async def predict(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(
        {"ok": True, "predictions": [1, 2]},
        headers={"Server-Timing": "decode;dur=0.100, infer;dur=0.500, encode;dur=0.050"},
    )


async def sleep(request: web.Request) -> web.Response:
    await request.read()
    await asyncio.sleep(int(request.match_info["ms"]) / 1000)
    return web.json_response({"ok": True}, headers={"Server-Timing": "infer;dur=1"})


async def stall(request: web.Request) -> web.Response:
    await request.read()
    key = request.match_info["key"]
    # ?serial=0: no lock (only the n-th request is slow; the others pass it)
    lock = locks.setdefault(key, asyncio.Lock()) if request.query.get("serial") != "0" else asyncio.Lock()
    async with lock:
        counts[key] = counts.get(key, 0) + 1
        if counts[key] == int(request.match_info["n"]):
            await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        else:
            await asyncio.sleep(0.002)
    return web.json_response({"ok": True})


async def chunked(request: web.Request) -> web.StreamResponse:
    await request.read()
    resp = web.StreamResponse(headers={"Content-Type": "application/json", "Server-Timing": "infer;dur=1.5"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for part in (b'{"predictions": ', b"[1, 2, 3]", b"}"):
        await resp.write(part)
    await resp.write_eof()
    return resp


async def close(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"ok": True}, headers={"Connection": "close"})


async def status(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"error": "as asked"}, status=int(request.match_info["code"]))


async def text(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="not json")


async def timing(request: web.Request) -> web.Response:
    await request.read()
    value = TIMINGS[request.match_info["variant"]]
    headers = {"Server-Timing": value} if value else {}
    return web.json_response({"ok": True}, headers=headers)


async def count(request: web.Request) -> web.Response:
    return web.json_response({"count": counts.get(request.match_info["key"], 0)})


last_echo: dict = {}


async def last(request: web.Request) -> web.Response:
    return web.json_response(last_echo)


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    last_echo.clear()
    last_echo.update(
        {
            "method": request.method,
            "path": request.path_qs,
            "headers": dict(request.headers),
            "body_len": len(body),
            "body_head": body[:200].decode("latin-1"),
        }
    )
    return web.json_response(last_echo)


def make_app() -> web.Application:
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/predict", predict)
    app.router.add_post("/sleep/{ms}", sleep)
    app.router.add_post("/stall/{key}/{n}/{ms}", stall)
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/close", close)
    app.router.add_post("/status/{code}", status)
    app.router.add_post("/text", text)
    app.router.add_post("/timing/{variant}", timing)
    app.router.add_get("/count/{key}", count)
    app.router.add_get("/last", last)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    return app


if __name__ == "__main__":
    port = int(sys.argv[1])
    print(json.dumps({"port": port}), flush=True)
    web.run_app(make_app(), host="127.0.0.1", port=port, access_log=None, print=None)
