"""The containers service: applications as Docker containers, through the Docker Engine API."""

from common.worker import run
from services.containers.actions import ACTIONS, ContainersContext, probe_loop, report

run(
    "containers",
    ACTIONS,
    lambda w: ContainersContext.build(w, w.settings),
    background=[probe_loop],
    report=report,
)
