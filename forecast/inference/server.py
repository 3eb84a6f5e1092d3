"""``forecast serve``: MLflow's scoring server (the same routes and request formats as ``mlflow models serve``)
behind a guard that bounds what a request can cost and makes every error one line.

The guard (:class:`RequestGuard`, plain ASGI) sits in front of ``mlflow.pyfunc.scoring_server``'s app:

- a body over ``max_bytes`` (``Content-Length`` or counted as it arrives) is a 413, before it is parsed;
- a JSON body is parsed once here: malformed JSON, or a document without exactly one of MLflow's input keys, is a
  400 with one line; a request of more than :data:`~forecast.inference.serving.MAX_ROWS` rows is a 413;
- only the last L rows (the model's lookback: all a forecast reads) are handed on, so a long history costs what a
  short one does and a worker is never busy long enough for uvicorn's health check to kill it; CSV bodies alike;
- an error the scoring server answers (4xx/5xx JSON) is cut to its first line, without MLflow's echo of the request
  (``Failed to predict data '<DataFrame>'``) and without a stack trace.

Each uvicorn worker builds its app with :func:`create_app` from the environment that :func:`serve` sets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from forecast.data.panel import is_long
from forecast.inference.serving import MAX_ROWS, PARAMS

MODEL_ENV = "FORECAST_SERVE_MODEL_DIR"
MAX_BYTES_ENV = "FORECAST_SERVE_MAX_BYTES"
THREADS_ENV = "FORECAST_SERVE_THREADS"
DEFAULT_MAX_MB = 32
INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
EXAMPLE = '{"dataframe_split": {"columns": ["date", ...], "data": [[...], ...]}, "params": {"horizon": 24}}'

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class Refused(Exception):
    """A request answered here, with ``status`` and one line."""

    def __init__(self, status: int, line: str, unread: bool = False) -> None:
        super().__init__(line)
        self.status, self.line, self.unread = status, line, unread  # unread: the body has not all arrived


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


def _tail(rows: Any, keep: int, where: str) -> Any:
    if len(rows) > MAX_ROWS:
        raise Refused(413, f"the request has {len(rows):,} rows in {where}; send at most {MAX_ROWS:,} (the model "
                           f"reads the last L={keep}).")
    return rows[-keep:] if len(rows) > keep else rows


def _check_params(params: Any) -> None:
    """``params`` as the pyfunc takes them: ``horizon`` (an integer) and ``fill``; MLflow would drop an unknown one
    silently and word a wrong type as its schema's internals."""
    if params is None:
        return
    if not isinstance(params, dict):
        raise Refused(400, f"params must be a JSON object like {{\"horizon\": 24, \"fill\": \"ffill\"}}, got "
                           f"{type(params).__name__}.")
    for name in params:
        if name not in PARAMS:
            raise Refused(400, f"unknown params.{name}; the model takes {', '.join(PARAMS)}.")
    horizon = params.get("horizon")
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int)):
        raise Refused(400, f"params.horizon must be an integer, got {json.dumps(horizon)}.")
    for key, example in (("level", '"80" or "80,90"'), ("quantiles", '"0.1,0.9"')):
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
            raise Refused(400, f"params.{key} must be text like {example}, got {json.dumps(value)}.")
        if isinstance(value, (int, float)):
            params[key] = str(value)  # the signature takes text, and MLflow would refuse a number
    fill = params.get("fill")
    if fill is not None and not isinstance(fill, str):
        raise Refused(400, f"params.fill must be a string (none, ffill or interpolate), got {json.dumps(fill)}.")


def _is_long(data: Any) -> bool:
    """Whether a request's data is a long panel (``unique_id``, ``ds``, ``y``; forecast.data.panel)."""
    if isinstance(data, dict) and isinstance(data.get("columns"), list):
        names = data["columns"]
    elif isinstance(data, list) and data and isinstance(data[0], dict):
        names = list(data[0])
    elif isinstance(data, dict):
        names = list(data)
    else:
        return False
    return is_long([str(n) for n in names])


def trim_json(body: bytes, keep: int) -> bytes:
    """The JSON request with only its last ``keep`` rows; :class:`Refused` for malformed or oversized ones."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise Refused(400, f"the request body is not valid JSON ({err}); send {EXAMPLE}") from None
    keys = [k for k in INPUT_KEYS if isinstance(doc, dict) and k in doc]
    if not isinstance(doc, dict) or len(keys) != 1:
        found = ", ".join(map(str, doc)) if isinstance(doc, dict) else type(doc).__name__
        raise Refused(400, f"the request must be a JSON object with exactly one of {', '.join(INPUT_KEYS)} "
                           f"(found: {found or 'nothing'}); send {EXAMPLE}")
    params = json.dumps(doc.get("params"))
    _check_params(doc.get("params"))
    changed = json.dumps(doc.get("params")) != params  # a numeric level, now text
    key = keys[0]
    data = doc[key]
    if _is_long(data):  # a long panel: the last L rows of every series, not of the file; the model picks them
        rows = data.get("data") if isinstance(data, dict) and "columns" in data else data
        if isinstance(rows, list):
            _tail(rows, len(rows), key)  # still at most MAX_ROWS
    elif key == "dataframe_split" and isinstance(data, dict) and isinstance(data.get("data"), list):
        changed |= len(data["data"]) > keep
        data["data"] = _tail(data["data"], keep, "dataframe_split.data")
        if isinstance(data.get("index"), list):
            data["index"] = data["index"][-keep:]
    elif key == "inputs" and isinstance(data, dict) and "history" in data:  # two frames: history and future
        for name, frame in data.items():
            rows = frame.get("data") if isinstance(frame, dict) else frame
            if isinstance(rows, list):
                cut = _tail(rows, keep if name == "history" else len(rows), f"inputs.{name}")
                changed |= len(cut) != len(rows)
                if isinstance(frame, dict):
                    frame["data"] = cut
                else:
                    data[name] = cut
    elif isinstance(data, list):
        changed |= len(data) > keep
        doc[key] = _tail(data, keep, key)
    elif isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        changed |= any(len(v) > keep for v in data.values())
        doc[key] = {c: _tail(v, keep, f"{key}.{c}") for c, v in data.items()}
    return json.dumps(doc).encode() if changed else body  # a request that needs no cut goes on as it came


def trim_csv(body: bytes, keep: int) -> bytes:
    """The CSV request: its header and last ``keep`` non-blank rows."""
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        return body
    rows = _tail(lines[1:], keep, "the CSV body")
    return b"\n".join([lines[0], *rows]) + b"\n"


class RequestGuard:
    """ASGI middleware in front of the scoring server's ``/invocations`` (see the module docstring)."""

    def __init__(self, app: Callable, seq_len: int, max_bytes: int) -> None:
        self.app, self.seq_len, self.max_bytes = app, seq_len, max_bytes

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/invocations" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        try:
            body = await self._body(headers, receive)
            if body is None:  # the client went away
                return
            mime = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if mime == b"application/json":
                body = trim_json(body, self.seq_len)
            elif mime == b"text/csv":
                body = trim_csv(body, self.seq_len)
        except Refused as err:
            if err.unread and headers.get(b"expect", b"").lower() != b"100-continue":
                await _drain(receive)  # a client that sends its whole body first reads the 413, not a reset
            await _reply(send, err.status, error_body(err.line, "REQUEST_TOO_LARGE" if err.status == 413
                                                      else "BAD_REQUEST"))
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
    the guard (limit ``$FORECAST_SERVE_MAX_BYTES``)."""
    import torch
    from mlflow.pyfunc import load_model, scoring_server

    threads = int(os.environ.get(THREADS_ENV, "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    from forecast import artifact

    model_dir = Path(os.environ[MODEL_ENV])
    model = load_model(str(model_dir))
    seq_len = artifact.read_meta(artifact.artifact_paths(model_dir)).seq_len
    return RequestGuard(scoring_server.init(model), seq_len, int(os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_MB << 20)))
