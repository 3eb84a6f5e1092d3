"""What a ``forecast serve`` request may be, checked before any model sees it: its JSON parsed once, its ``params``
validated, and its rows cut to the model's last L (a long panel is passed whole); a malformed, oversized or
ill-typed request is :class:`Refused` with an HTTP status and one line. :mod:`forecast.inference.server` applies it.
"""

from __future__ import annotations

import json
from typing import Any

from forecast.data.panel import is_long
from forecast.inference.serving import MAX_ROWS, PARAMS

INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
EXAMPLE = '{"dataframe_split": {"columns": ["date", ...], "data": [[...], ...]}, "params": {"horizon": 24}}'


class Refused(Exception):
    """A request answered here, with ``status`` and one line."""

    def __init__(self, status: int, line: str, unread: bool = False) -> None:
        super().__init__(line)
        self.status, self.line, self.unread = status, line, unread  # unread: the body has not all arrived


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


def is_long_data(data: Any) -> bool:
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


def trim_json(body: bytes, keep: int) -> tuple[dict, bytes]:
    """The JSON request with only its last ``keep`` rows, parsed and as bytes; :class:`Refused` for malformed or
    oversized ones."""
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
    if is_long_data(data):  # a long panel: the last L rows of every series, not of the file; the model picks them
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
    return doc, (json.dumps(doc).encode() if changed else body)  # a request that needs no cut goes on as it came


def trim_csv(body: bytes, keep: int) -> bytes:
    """The CSV request: its header and last ``keep`` non-blank rows."""
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        return body
    rows = _tail(lines[1:], keep, "the CSV body")
    return b"\n".join([lines[0], *rows]) + b"\n"

