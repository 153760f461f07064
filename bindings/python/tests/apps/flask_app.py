"""A Flask application for the WSGI tests (and ``python -m kestrel flask_app:app``)."""

import time

from flask import Flask, Response, jsonify, request, send_file, stream_with_context

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask"


@app.post("/json")
def echo_json():
    return jsonify(got=request.get_json(), length=request.content_length)


@app.post("/form")
def form():
    upload = request.files.get("file")
    return jsonify(
        name=request.form.get("name"),
        file=upload.filename if upload else None,
        size=len(upload.read()) if upload else 0,
    )


@app.get("/stream")
def stream():
    count = int(request.args.get("n", 3))

    def generate():
        for i in range(count):
            yield f"line {i}\n"

    return Response(stream_with_context(generate()), mimetype="text/plain")


@app.get("/file")
def file():
    return send_file(request.args["path"], mimetype="application/octet-stream")


@app.get("/boom")
def boom():
    raise RuntimeError("flask view failed")


@app.get("/slow")
def slow():
    time.sleep(float(request.args.get("s", "0.5")))
    return "slow done"


@app.get("/info")
def info():
    env = request.environ
    return jsonify(
        path=request.path,
        script_root=request.script_root,
        url=request.url,
        remote=request.remote_addr,
        protocol=env["SERVER_PROTOCOL"],
    )
