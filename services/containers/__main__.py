"""The containers service: applications as Docker containers, through the Docker Engine API."""

from common.worker import idle_unless_enabled, run

# Before the backend is imported: a worker disabled in the configuration stays light.
idle_unless_enabled("containers")

from services.containers.actions import ACTIONS, ContainersContext, probe_loop, report

run(
    "containers",
    ACTIONS,
    lambda w: ContainersContext.build(w, w.settings),
    background=[probe_loop],
    report=report,
)
