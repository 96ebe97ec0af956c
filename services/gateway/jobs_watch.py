"""Jobs the gateway has seen start but not end, kept on disk so a gateway restart does not
forget them. When a worker restarts (its pid changes) its open jobs can never finish; the
gateway reports them ``failed`` with the reason instead of leaving them ``running``."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from common.errors import ErrorCode
from common.ipc import encoder
from common.messages import ErrorBody, JobEvent, JobState

log = logging.getLogger("tether.gateway.jobs")


class OpenJob(msgspec.Struct):
    service: str
    action: str
    pid: int
    seq: int


_decoder = msgspec.json.Decoder(dict[str, OpenJob])
_event_decoder = msgspec.json.Decoder(JobEvent)


class OpenJobs:
    def __init__(self, state_dir: str, publish: Callable[[str, bytes], None]) -> None:
        self.path = Path(state_dir) / "open-jobs.json"
        self._publish = publish
        self.jobs: dict[str, OpenJob] = {}
        with contextlib.suppress(FileNotFoundError, msgspec.MsgspecError):
            self.jobs = _decoder.decode(self.path.read_bytes())

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(encoder.encode(self.jobs))
        os.replace(tmp, self.path)

    def seen(self, job_id: str, payload: bytes, final: bool, pid: int) -> None:
        if final:
            if self.jobs.pop(job_id, None) is not None:
                self._save()
            return
        try:
            ev = _event_decoder.decode(payload)
        except msgspec.MsgspecError:
            return
        known = self.jobs.get(job_id)
        self.jobs[job_id] = OpenJob(ev.service, ev.action, pid, ev.seq)
        if known is None or known.pid != pid:
            self._save()  # only new jobs touch the disk, not every progress event

    def worker_pid(self, service: str, pid: int) -> None:
        """A heartbeat from ``service``: fail its jobs that belong to an earlier process."""
        dead = [(k, j) for k, j in self.jobs.items() if j.service == service and j.pid != pid]
        for job_id, job in dead:
            log.warning("job %s of %s was interrupted: its worker restarted", job_id, service)
            ev = JobEvent(
                job_id=job_id,
                service=service,
                action=job.action,
                state=JobState.FAILED,
                seq=job.seq + 1,
                ts=time.time(),
                error=ErrorBody(
                    ErrorCode.FAILED,
                    f"the {service} service stopped during the job (crash or restart); the job "
                    "did not finish and may have been partly applied",
                    {"interrupted": True, "old_pid": job.pid, "new_pid": pid},
                ),
            )
            del self.jobs[job_id]
            self._publish(job_id, encoder.encode(ev))
        if dead:
            self._save()
