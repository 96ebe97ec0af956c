from common.worker import idle_unless_enabled, run

# Before the backend is imported: a worker disabled in the configuration stays light.
idle_unless_enabled("stats")

from services.stats.actions import ACTIONS, StatsContext, telemetry_loop

run(
    "stats",
    ACTIONS,
    lambda w: StatsContext(w, w.settings.stats.interval),
    background=[telemetry_loop],
)
