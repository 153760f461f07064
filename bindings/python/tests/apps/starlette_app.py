"""A Starlette application for the ASGI tests: lifespan state, streaming, bodies, errors."""

import asyncio
import contextlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

#: what the lifespan did, for the tests to check
events: list = []


@contextlib.asynccontextmanager
async def lifespan(app):
    events.append("startup")
    yield {"greeting": "hello from lifespan"}
    events.append("shutdown")


async def index(request: Request):
    return PlainTextResponse(request.state.greeting)


async def echo(request: Request):
    body = await request.body()
    return PlainTextResponse(body, media_type=request.headers.get("content-type", "text/plain"))


async def count_stream(request: Request):
    total = 0
    chunks = 0
    async for chunk in request.stream():
        total += len(chunk)
        chunks += 1 if chunk else 0
    return JSONResponse({"total": total, "chunks": chunks})


async def stream(request: Request):
    n = int(request.query_params.get("n", "3"))
    size = int(request.query_params.get("size", "5"))

    async def generate():
        for i in range(n):
            yield (str(i % 10) * size).encode()
            await asyncio.sleep(0)

    return StreamingResponse(generate(), media_type="text/plain")


async def info(request: Request):
    return JSONResponse(
        {
            "http_version": request.scope["http_version"],
            "path": request.url.path,
            "query": request.url.query,
            "client": list(request.client) if request.client else None,
            "host": request.headers.get("host"),
            "root_path": request.scope.get("root_path"),
        }
    )


async def boom(request: Request):
    raise RuntimeError("starlette endpoint failed")


async def file(request: Request):
    return FileResponse(request.query_params["path"])


async def wait_disconnect(request: Request):
    # Returns once the client is gone (http.disconnect).
    while not await request.is_disconnected():
        await asyncio.sleep(0.02)
    events.append("disconnected")
    return PlainTextResponse("gone")


app = Starlette(
    routes=[
        Route("/", index),
        Route("/echo", echo, methods=["POST"]),
        Route("/count", count_stream, methods=["POST"]),
        Route("/stream", stream),
        Route("/info", info),
        Route("/boom", boom),
        Route("/file", file),
        Route("/wait-disconnect", wait_disconnect),
    ],
    lifespan=lifespan,
)
