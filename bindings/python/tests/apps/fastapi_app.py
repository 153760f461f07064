"""A FastAPI application for the ASGI tests: validation, dependencies, sync endpoints."""

import threading

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


def token(x_token: str = "none") -> str:
    return x_token


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None, tok: str = Depends(token)):
    return {"item_id": item_id, "q": q, "token": tok}


@app.post("/items")
async def create_item(item: Item):
    return {"name": item.name, "total": item.price * 2, "tags": item.tags}


@app.get("/sync")
def sync_endpoint():
    # FastAPI runs plain functions in a worker thread (anyio): not the event loop's.
    return {"thread": threading.current_thread().name}


@app.get("/missing")
async def missing():
    raise HTTPException(status_code=404, detail="no such thing")


@app.get("/crash")
async def crash():
    raise ZeroDivisionError("fastapi endpoint failed")


@app.get("/numbers")
async def numbers():
    async def gen():
        for i in range(5):
            yield f"{i}\n"

    return StreamingResponse(gen(), media_type="text/plain")
