"""A watchdog that ends an MLflow run FAILED when the process that owns it dies without ending it.

A ``finally`` cannot run when a process is killed: SIGKILL, the OOM killer, Lightning's DDP launcher killing
rank 0 after another rank crashed (it sends SIGKILL), torchrun's SIGTERM to the survivors, a tuning worker
killed mid-trial. :func:`watch` starts ``python -m forecast.runguard URI RUN_ID`` in its own session, with a
pipe on its stdin. The owner writes ``done`` before it exits normally (:meth:`Guard.release`); when the pipe
closes without it, the guard ends the run and any of its nested runs that are still RUNNING as FAILED, tagged
``failure=owner process died``. Waiting costs nothing (a blocking read); MLflow is imported only in that case.

When the guard dies too (the whole group killed, a container stopped), the runs stay RUNNING until the next run in
the same experiment starts: every run is tagged ``owner=host:pid``, and :func:`close_orphans` ends the ones whose
process on this host is gone.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from forecast import tracking
from forecast.process import dead_owner

DONE = b"done\n"


@dataclass
class Guard:
    """The owner's end of the pipe to a guard process."""

    proc: subprocess.Popen | None

    def release(self) -> None:
        """The owner ended the run itself: tell the guard to exit without touching it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(DONE)
            proc.stdin.close()
        except OSError:  # the guard is gone already
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def end_run(mlf: Any, run_id: str | None, status: str, guard: Guard | None) -> None:
    """End ``run_id`` (when there is one) with ``status``, then release its guard, even if ending it failed."""
    try:
        if run_id is not None:
            mlf.set_terminated(run_id, status)
    finally:
        if guard is not None:
            guard.release()


def watch(tracking_uri: str, run_id: str) -> Guard:
    """Start a guard for ``run_id``; best effort (a guard that cannot start is no reason to fail a run)."""
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "forecast.runguard", tracking_uri, run_id],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C or a launcher's kill of the owner's process group spares it
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    except OSError:
        return Guard(None)
    return Guard(proc)


def close_orphans(mlf: Any, experiment_id: str) -> list[str]:
    """End the runs of ``experiment_id`` left RUNNING by a process of this host that is gone, and their nested
    runs, as FAILED: the rerun of a command whose process and guard were both killed (a whole process group, a
    container, a reboot) closes what they left open. Returns the ids it ended."""
    host = socket.gethostname().replace("'", "''")
    found = mlf.search_runs([experiment_id], max_results=1000,
                            filter_string=f"attributes.status = 'RUNNING' and tags.{tracking.OWNER_TAG} LIKE '{host}:%'")
    ended: list[str] = []
    for run in found:
        if run.info.run_id not in ended and dead_owner(run.data.tags.get(tracking.OWNER_TAG, "")):
            ended += end_if_running(mlf, run.info.run_id, "owner process died; closed by a later run")
    return ended


def end_if_running(mlf: Any, run_id: str, why: str = "owner process died") -> list[str]:
    """End ``run_id`` and its RUNNING nested runs as FAILED, tagged ``failure=why``; returns the ids it ended."""
    run = mlf.get_run(run_id)
    ended: list[str] = []
    children = mlf.search_runs([run.info.experiment_id], max_results=1000,
                               filter_string=f"tags.`mlflow.parentRunId` = '{run_id}' and "
                                             "attributes.status = 'RUNNING'")
    for child in children:
        if child.data.tags.get("trial_state") == "RUNNING":
            mlf.set_tag(child.info.run_id, "trial_state", "FAILED")
        mlf.set_tag(child.info.run_id, "failure", why)
        mlf.set_terminated(child.info.run_id, "FAILED")
        ended.append(child.info.run_id)
    if run.info.status == "RUNNING":
        mlf.set_tag(run_id, "failure", why)
        mlf.set_terminated(run_id, "FAILED")
        ended.append(run_id)
    return ended


def main(argv: list[str]) -> int:
    """``python -m forecast.runguard URI RUN_ID``: wait for stdin to close, then act unless told ``done``."""
    uri, run_id = argv
    data = b""
    try:
        while chunk := sys.stdin.buffer.read(64):
            data += chunk
    except (OSError, KeyboardInterrupt):
        pass
    if data.startswith(DONE):
        return 0
    end_if_running(tracking.client(uri), run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
