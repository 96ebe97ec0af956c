"""The watchdog: restarts hung processes and reports crash-looping ones, from outside the
gateway (so a wedged gateway is caught too)."""
