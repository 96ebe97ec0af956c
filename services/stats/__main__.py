from common.worker import prepare_worker, run

# Before the backend is imported (see prepare_worker).
prepare_worker("stats")

from services.stats.actions import ACTIONS, StatsContext, telemetry_loop

run(
    "stats",
    ACTIONS,
    lambda w: StatsContext(w, w.settings.stats.interval),
    background=[telemetry_loop],
)
