"""The network service: NetworkManager over D-Bus."""

from common.worker import idle_unless_enabled, run

# Before the backend is imported: a worker disabled in the configuration stays light.
idle_unless_enabled("network")

from services.network.actions import ACTIONS, keep_connected, make_context, report, watch_link

run("network", ACTIONS, make_context, background=[keep_connected, watch_link], report=report)
