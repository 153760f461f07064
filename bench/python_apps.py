"""Hello-world apps for bench/python.sh: the same ASGI and WSGI app for every server."""

BODY = b"Hello, World!"
HEADERS = [(b"content-type", b"text/plain")]


async def asgi_app(scope, receive, send):
    """ASGI 3: answers every HTTP request with BODY."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def wsgi_app(environ, start_response):
    """WSGI (PEP 3333): answers every request with BODY."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [BODY]
