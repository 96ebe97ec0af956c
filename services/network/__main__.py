"""The network service: NetworkManager over D-Bus."""

from common.worker import prepare_worker, run

# Before the backend is imported (see prepare_worker).
prepare_worker("network")

from services.network.actions import ACTIONS, keep_connected, make_context, report, watch_link

run("network", ACTIONS, make_context, background=[keep_connected, watch_link], report=report)
