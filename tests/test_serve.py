"""The request guard of `forecast serve`, driven in process as an ASGI app (no server, no model).

Checks: a body over the limit is a 413 before anything parses it (by Content-Length, or counted as it arrives);
malformed JSON, a document without exactly one input key and bad params are one-line 400s that never reach the
scoring server; only the last L rows reach it (JSON and CSV); an error the scoring server answers is cut to one
line without MLflow's echo of the request or a stack trace; other routes pass through untouched. The command's
own checks (port in use, workers, a folder without MLmodel) are one line and exit 2 before any model loads.
"""

from __future__ import annotations

import json
import socket

import pytest

from forecast.inference import request_checks, server
from forecast.inference.server import RequestGuard
from tests.helpers import asgi_post, run_cli

L = 4
COLS = ["date", "a"]


class Inner:
    """A stand-in for the scoring server: records what it was given, answers ``status`` with ``body``."""

    def __init__(self, status: int = 200, body: bytes = b'{"predictions": []}') -> None:
        self.status, self.body, self.seen = status, body, []

    async def __call__(self, scope: dict, receive, send) -> None:  # noqa: ANN001
        got = b""
        while True:
            message = await receive()
            got += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append((scope["path"], got))
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())]})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


def call(app, body: bytes, ctype: str = "application/json", path: str = "/invocations", chunk: int | None = None,
         length: int | None = None) -> tuple[int, dict, dict]:
    """POST ``body`` to the ASGI ``app``: (status, headers, JSON body)."""
    status, head, raw = asgi_post(app, body, ctype, path, chunk, length)
    assert int(head.get("content-length", len(raw))) == len(raw)
    return status, head, json.loads(raw)


def split(n: int, **extra) -> bytes:
    rows = [[f"2020-01-01 {i:02d}:00:00", float(i)] for i in range(n)]
    return json.dumps({"dataframe_split": {"columns": COLS, "data": rows}, **extra}).encode()


def test_only_the_last_rows_reach_the_scoring_server() -> None:
    inner = Inner()
    assert call(RequestGuard(inner, L, 1 << 20), split(10))[0] == 200
    doc = json.loads(inner.seen[-1][1])
    assert [r[1] for r in doc["dataframe_split"]["data"]] == [6.0, 7.0, 8.0, 9.0]
    records = json.dumps({"dataframe_records": [{"date": str(i), "a": i} for i in range(9)]}).encode()
    call(RequestGuard(inner, L, 1 << 20), records)
    assert [r["a"] for r in json.loads(inner.seen[-1][1])["dataframe_records"]] == [5, 6, 7, 8]
    columns = json.dumps({"inputs": {"date": list(range(7)), "a": list(range(7))}, "params": {"horizon": 2}})
    call(RequestGuard(inner, L, 1 << 20), columns.encode())
    sent = json.loads(inner.seen[-1][1])
    assert sent["inputs"]["a"] == [3, 4, 5, 6] and sent["params"] == {"horizon": 2}
    csv = b"date,a\n" + b"".join(b"2020-01-0%d,%d\n" % (i + 1, i) for i in range(8)) + b"\n\n"
    assert call(RequestGuard(inner, L, 1 << 20), csv, "text/csv")[0] == 200
    assert inner.seen[-1][1].splitlines() == [b"date,a", b"2020-01-05,4", b"2020-01-06,5", b"2020-01-07,6",
                                              b"2020-01-08,7"]


@pytest.mark.parametrize("how", ["content-length", "counted in chunks"])
def test_a_body_over_the_limit_is_a_413_before_it_is_parsed(how) -> None:
    inner = Inner()
    body = split(200)
    kwargs = {"length": len(body)} if how == "content-length" else {"chunk": 100}
    status, _, doc = call(RequestGuard(inner, L, 1000), body, **kwargs)
    assert status == 413 and doc["error_code"] == "REQUEST_TOO_LARGE"
    assert "larger than the server's limit" in doc["message"] and "L=4" in doc["message"]
    assert inner.seen == []


def test_too_many_rows_is_a_413(monkeypatch) -> None:
    monkeypatch.setattr(request_checks, "MAX_ROWS", 50)
    inner = Inner()
    status, _, doc = call(RequestGuard(inner, L, 1 << 20), split(51))
    assert status == 413 and "the request has 51 rows in dataframe_split.data; send at most 50" in doc["message"]
    assert call(RequestGuard(inner, L, 1 << 20), split(50))[0] == 200


BAD = {
    "malformed JSON": (b'{"dataframe_split": {"columns": ["date"', "is not valid JSON (Expecting"),
    "no input key": (b'{"dataframe_splitt": {}}', "exactly one of dataframe_split, dataframe_records, instances, "
                                                  "inputs (found: dataframe_splitt)"),
    "two input keys": (b'{"inputs": [], "instances": []}', "(found: inputs, instances)"),
    "a list": (b"[1, 2]", "(found: list)"),
    "horizon as text": (split(5, params={"horizon": "ten"}), 'params.horizon must be an integer, got "ten"'),
    "horizon as bool": (split(5, params={"horizon": True}), "params.horizon must be an integer, got true"),
    "an unknown param": (split(5, params={"horizn": 3}), "unknown params.horizn; the model takes horizon, fill, level"),
    "fill as a number": (split(5, params={"fill": 1}), "params.fill must be a string"),
    "params as a list": (split(5, params=[1]), "params must be a JSON object"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_are_one_line_400s_that_never_reach_the_server(case) -> None:
    body, needle = BAD[case]
    inner = Inner()
    status, _, doc = call(RequestGuard(inner, L, 1 << 20), body)
    assert status == 400 and needle in doc["message"], doc
    assert "\n" not in doc["message"] and inner.seen == []


def test_the_scoring_servers_errors_are_cut_to_one_line() -> None:
    echo = {"error_code": "INVALID_PARAMETER_VALUE", "stack_trace": "Traceback (most recent call last):\n  ...",
            "message": "Failed to predict data '                 date   a\n0  2020-01-01  1.0\n1  ...'. \n"
                       "Error: input: column 'b' is missing (the model needs a, b); add it.\nmore detail"}
    status, head, doc = call(RequestGuard(Inner(400, json.dumps(echo).encode()), L, 1 << 20), split(5))
    assert status == 400 and head["content-type"] == "application/json"
    assert doc == {"error_code": "INVALID_PARAMETER_VALUE",
                   "message": "input: column 'b' is missing (the model needs a, b); add it."}
    status, _, doc = call(RequestGuard(Inner(500, b"Internal Server Error\nat line 3"), L, 1 << 20), split(5))
    assert status == 500 and doc["message"] == "Internal Server Error"
    long = {"message": "x" * 5000}
    assert len(call(RequestGuard(Inner(400, json.dumps(long).encode()), L, 1 << 20), split(5))[2]["message"]) <= 400


def test_other_routes_pass_through() -> None:
    inner = Inner(200, b'{"ok": 1}')
    status, _, doc = call(RequestGuard(inner, L, 10), b"x" * 100, path="/ping")
    assert status == 200 and doc == {"ok": 1} and inner.seen == [("/ping", b"x" * 100)]


def test_serve_refuses_a_taken_port_and_bad_options_in_one_line(tmp_path, capsys) -> None:
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'm.db'}"
    MlflowClient(tracking_uri=store).search_experiments()  # an empty store for `forecast ui`
    capsys.readouterr()  # and not its creation's log lines
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(["serve", "-m", str(tmp_path), "-p", str(port)], capsys)
        ui_code, _, ui_err = run_cli(["ui", "-p", str(port), "--tracking-uri", store], capsys)  # -p as serve's
    assert code == 2 and err.strip() == f"error: port {port} on 127.0.0.1 is in use; pick another with --port, " \
                                        "or --host."
    assert (ui_code, ui_err) == (code, err)  # not the MLflow UI's log lines and exit code 0
    code, _, err = run_cli(["serve", "-m", str(tmp_path), "-w", "0"], capsys)
    assert code == 2 and "--workers 0 must be at least 1" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["serve", "-m", str(tmp_path), "--max-request-mb", "0"], capsys)
    assert code == 2 and "--max-request-mb 0 must be above 0" in err
    (tmp_path / "forecast_model.json").write_text("{}")
    code, _, err = run_cli(["serve", "-m", str(tmp_path), "-p", "0"], capsys)
    assert code == 2 and "--port 0 is not a TCP port" in err
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    code, _, err = run_cli(["serve", "-m", str(tmp_path), "-p", str(port)], capsys)
    assert code == 2 and "without MLflow's MLmodel file" in err and len(err.strip().splitlines()) == 1


def test_a_long_panel_is_passed_whole(monkeypatch) -> None:
    """unique_id, ds, y: the last L rows of the file are one series' tail, so the model picks each series' own."""
    inner = Inner()
    rows = [[uid, f"2020-01-{d:02d}", float(d)] for uid in ("a", "b") for d in range(1, 11)]
    body = json.dumps({"dataframe_split": {"columns": ["unique_id", "ds", "y"], "data": rows}}).encode()
    assert call(RequestGuard(inner, L, 1 << 20), body)[0] == 200
    assert json.loads(inner.seen[-1][1])["dataframe_split"]["data"] == rows
    monkeypatch.setattr(request_checks, "MAX_ROWS", 19)
    status, _, doc = call(RequestGuard(inner, L, 1 << 20), body)
    assert status == 413 and "the request has 20 rows" in doc["message"]


class Model:
    """A stand-in for the pyfunc: records each frame and params, forecasts 2 rows or raises ``fail``."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail, self.calls = fail, []

    def predict(self, frame, params=None):  # noqa: ANN001, ANN201
        import pandas as pd

        self.calls.append((frame, params))
        if self.fail is not None:
            raise self.fail
        return pd.DataFrame({"date": pd.to_datetime(["2020-01-02", "2020-01-03"]), "a": [1.5, float(len(frame))]})


def test_a_wide_split_request_is_answered_directly_as_the_scoring_server_would() -> None:
    import io

    from mlflow.pyfunc.scoring_server import predictions_to_json

    inner, model = Inner(), Model()
    status, head, doc = call(RequestGuard(inner, L, 1 << 20, model), split(10, params={"horizon": 2}))
    assert status == 200 and inner.seen == [] and head["content-type"] == "application/json"
    frame, params = model.calls[-1]
    assert frame.columns.tolist() == COLS and len(frame) == L and params == {"horizon": 2}  # the trimmed request
    expected = io.StringIO()
    predictions_to_json(model.predict(frame), expected)
    assert doc == json.loads(expected.getvalue()) and doc["predictions"][1] == {"date": "2020-01-03T00:00:00",
                                                                                 "a": 4.0}
    assert call(RequestGuard(inner, L, 1 << 20, model), split(3), "application/json; charset=UTF-8")[0] == 200
    assert inner.seen == []


def test_the_models_own_refusal_is_answered_directly_in_one_line() -> None:
    """A RequestError (the pyfunc's one line) is the 400 the scoring server's answer becomes behind the guard, with
    no second forecast through the scoring server."""
    from forecast.inference.serving import RequestError

    inner, model = Inner(), Model(RequestError("input: column 'a' has an empty or NaN value at data row 4; fill it."))
    status, _, doc = call(RequestGuard(inner, L, 1 << 20, model), split(5))
    assert status == 400 and inner.seen == [] and len(model.calls) == 1
    assert doc == {"error_code": "INVALID_PARAMETER_VALUE",
                   "message": "input: column 'a' has an empty or NaN value at data row 4; fill it."}


@pytest.mark.parametrize("case", ["refused by the model", "records", "long panel", "an extra key", "csv",
                                  "another content-type parameter"])
def test_every_other_request_goes_to_the_scoring_server(case) -> None:
    inner, model = Inner(), Model(ValueError("input: column 'a' has a NaN") if case == "refused by the model" else None)
    body, ctype = split(5), "application/json"
    if case == "records":
        body = json.dumps({"dataframe_records": [{"date": "2020-01-01", "a": 1.0}]}).encode()
    elif case == "long panel":
        body = json.dumps({"dataframe_split": {"columns": ["unique_id", "ds", "y"], "data": [["x", "2020-01-01", 1.0]]}}
                          ).encode()
    elif case == "an extra key":
        body = split(5, extra={"x": 1})
    elif case == "csv":
        body, ctype = b"date,a\n2020-01-01,1.0\n", "text/csv"
    elif case == "another content-type parameter":
        ctype = "application/json; format=pandas-split"
    status, _, doc = call(RequestGuard(inner, L, 1 << 20, model), body, ctype)
    assert status == 200 and doc == {"predictions": []} and len(inner.seen) == 1  # the scoring server's own answer
    assert len(model.calls) == (1 if case == "refused by the model" else 0)
