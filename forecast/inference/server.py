"""``forecast serve``: MLflow's scoring server (the same routes and request formats as ``mlflow models serve``)
behind a guard that bounds what a request can cost and makes every error one line.

The guard (:class:`RequestGuard`, plain ASGI) sits in front of ``mlflow.pyfunc.scoring_server``'s app:

- a body over ``max_bytes`` (``Content-Length`` or counted as it arrives) is a 413, before it is parsed;
- a JSON body is parsed once here: malformed JSON, or a document without exactly one of MLflow's input keys, is a
  400 with one line; a request of more than :data:`~forecast.inference.serving.MAX_ROWS` rows is a 413;
- only the last L rows (the model's lookback: all a forecast reads) are handed on, so a long history costs what a
  short one does and a worker is never busy long enough for uvicorn's health check to kill it; CSV bodies alike;
- an error the scoring server answers (4xx/5xx JSON) is cut to its first line, without MLflow's echo of the request
  (``Failed to predict data '<DataFrame>'``) and without a stack trace;
- the common request, a wide ``dataframe_split`` JSON document, is answered here from the request already parsed
  (:func:`answer_split`): the same frame, the same ``model.predict`` and the same bytes as the scoring server's
  answer, without its second JSON parse, its thread hop and its pure-Python JSON encoder (MLflow streams the answer
  through ``json.dump``); a request the model refuses with its one line (:class:`RequestError`) gets the 400 the
  scoring server's answer becomes here. Anything else goes to the scoring server, which answers (or words the
  error) exactly as ``mlflow models serve`` does.

Each uvicorn worker builds its app with :func:`create_app` from the environment that :func:`serve` sets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from forecast.inference.request_checks import Refused, is_long_data, trim_csv, trim_json
from forecast.inference.serving import RequestError
from forecast.process import pause_gc, resume_gc

MODEL_ENV = "FORECAST_SERVE_MODEL_DIR"
MAX_BYTES_ENV = "FORECAST_SERVE_MAX_BYTES"
THREADS_ENV = "FORECAST_SERVE_THREADS"
DEFAULT_MAX_MB = 32

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def error_body(line: str, code: str) -> bytes:
    return json.dumps({"error_code": code, "message": line}).encode()


def one_line(message: str, limit: int = 400) -> str:
    """The line that says what is wrong: MLflow's ``Failed to predict data '<the request>'. \\nError:`` prefix and
    everything after the first line dropped."""
    head, sep, tail = message.partition(". \nError: ")
    if sep and head.startswith("Failed to predict data"):
        message = tail
    lines = [s.strip() for s in message.strip().splitlines() if s.strip()]
    line = lines[0] if lines else "the request could not be answered"
    return line if len(line) <= limit else line[:limit - 3] + "..."


def content_type(header: bytes) -> tuple[bytes, bool]:
    """The MIME type of a ``Content-Type`` header, and whether the header is plain: no parameter but
    ``charset=utf-8`` (the scoring server answers any other parameter with a 415)."""
    mime, *extra = (part.strip().lower() for part in header.split(b";"))
    return mime, all(part.replace(b" ", b"") == b"charset=utf-8" for part in extra)


def answer_split(model: Any, doc: Any) -> tuple[int, bytes] | None:
    """The answer (status, body) that the scoring server, behind this guard, gives to a wide ``dataframe_split``
    request ``doc`` (parsed, trimmed), computed as it does: ``pandas.DataFrame(index, columns, data)``,
    ``model.predict(frame, params=...)``, the frame's records under ``predictions`` with MLflow's ``NumpyEncoder``;
    a :class:`RequestError` is the 400 with its one line. None for any other request or error (the scoring server
    then answers)."""
    split = doc.get("dataframe_split") if isinstance(doc, dict) and set(doc) <= {"dataframe_split", "params"} else None
    if not (isinstance(split, dict) and "data" in split and set(split) <= {"columns", "data", "index"}) or \
            is_long_data(split):
        return None
    import pandas as pd
    from mlflow.utils.proto_json_utils import NumpyEncoder

    try:
        frame = pd.DataFrame(index=split.get("index"), columns=split.get("columns"), data=split["data"])
        out = model.predict(frame, params=doc.get("params"))
    except RequestError as err:  # the model's own one line: what _one_line_errors makes of the scoring server's 400
        return err.get_http_status_code(), error_body(one_line(err.message), err.error_code)
    except Exception:  # anything else: the scoring server runs it and answers as it always does
        return None
    if not isinstance(out, pd.DataFrame):
        return None
    return 200, json.dumps({"predictions": out.to_dict(orient="records")}, cls=NumpyEncoder).encode()


class RequestGuard:
    """ASGI middleware in front of the scoring server's ``/invocations`` (see the module docstring); with ``model``
    (the scoring server's own), the common request is answered here (:func:`answer_split`)."""

    def __init__(self, app: Callable, seq_len: int, max_bytes: int, model: Any = None) -> None:
        self.app, self.seq_len, self.max_bytes, self.model = app, seq_len, max_bytes, model

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/invocations" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        try:
            body = await self._body(headers, receive)
            if body is None:  # the client went away
                return
            mime, plain = content_type(headers.get(b"content-type", b""))
            doc = None
            if mime == b"application/json":
                doc, body = trim_json(body, self.seq_len)
            elif mime == b"text/csv":
                body = trim_csv(body, self.seq_len)
        except Refused as err:
            if err.unread and headers.get(b"expect", b"").lower() != b"100-continue":
                await _drain(receive)  # a client that sends its whole body first reads the 413, not a reset
            await _reply(send, err.status, error_body(err.line, "REQUEST_TOO_LARGE" if err.status == 413
                                                      else "BAD_REQUEST"))
            return
        if self.model is not None and doc is not None and plain:
            # in the event loop, not in a thread as the scoring server does: the request is cut to L rows, so this is
            # a few milliseconds, and the hop cost more (serve_load.py: p50 32 ms inline against 42-51 ms threaded)
            answer = answer_split(self.model, doc)
            if answer is not None:
                await _reply(send, *answer)
                return
        await self.app(scope, _replay(body, receive), _one_line_errors(send))

    async def _body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes | None:
        limit = self.max_bytes
        too_large = f"the request body is larger than the server's limit of {limit / 2**20:g} MB; send only the " \
                    f"last L={self.seq_len} rows of history (or start the server with a larger --max-request-mb)."
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            raise Refused(413, too_large, unread=True)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Refused(413, too_large, unread=message.get("more_body", False))
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


async def _drain(receive: Receive, limit: int = 1 << 30) -> None:
    """Read and drop the rest of a refused body (up to ``limit`` bytes; no parse, nothing kept)."""
    size = 0
    while size < limit:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        size += len(message.get("body", b""))


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the (trimmed) body once, then waits on the real one (for a disconnect)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _one_line_errors(send: Send) -> Send:
    """A ``send`` that rewrites an error response's JSON ``message`` to one line and drops any stack trace."""
    start: dict | None = None
    chunks: list[bytes] = []

    async def wrapped(message: dict) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and message["status"] >= 400:
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        raw = b"".join(chunks)
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            code, line = str(doc.get("error_code", "BAD_REQUEST")), one_line(str(doc.get("message", "")))
        else:
            code, line = "BAD_REQUEST", one_line(raw.decode("utf-8", "replace"))
        await _reply(send, start["status"], error_body(line, code))

    return wrapped


async def _reply(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def create_app() -> RequestGuard:
    """The app of one uvicorn worker: the model at ``$FORECAST_SERVE_MODEL_DIR`` in MLflow's scoring server, behind
    the guard (limit ``$FORECAST_SERVE_MAX_BYTES``). The worker imports and loads with the garbage collector paused,
    then freezes what it built, as the ``forecast`` command does (:func:`forecast.process.pause_gc`): whatever calls
    this is a serving process, and its heap so far is frozen."""
    pause_gc()
    import torch
    from mlflow.pyfunc import load_model, scoring_server

    threads = int(os.environ.get(THREADS_ENV, "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    from forecast import artifact

    model_dir = Path(os.environ[MODEL_ENV])
    model = load_model(str(model_dir))
    # Everything loaded so far lives as long as the worker: frozen, no full collection walks it again (one walked the
    # ~310,000 objects of a loaded worker in 146 ms, holding every request in flight; after the freeze, under 1 ms).
    resume_gc()
    seq_len = artifact.read_meta(artifact.artifact_paths(model_dir)).seq_len
    direct = model if model.metadata.get_input_schema() is None else None  # ours have none; one would cast the frame
    return RequestGuard(scoring_server.init(model), seq_len, int(os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_MB << 20)),
                        direct)
