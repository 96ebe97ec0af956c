from common.worker import run
from services.stats.actions import ACTIONS, StatsContext, telemetry_loop

run(
    "stats",
    ACTIONS,
    lambda w: StatsContext(w, w.settings.stats.interval),
    background=[telemetry_loop],
)
