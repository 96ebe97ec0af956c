"""The containers service: applications as Docker containers, through the Docker Engine API."""

from common.worker import prepare_worker, run

# Before the backend is imported (see prepare_worker).
prepare_worker("containers")

from services.containers.actions import ACTIONS, ContainersContext, probe_loop, report

run(
    "containers",
    ACTIONS,
    lambda w: ContainersContext.build(w, w.settings),
    background=[probe_loop],
    report=report,
)
