"""``python -m services.apt``: the apt service."""

from common.worker import prepare_worker, run

# Before the backend is imported (see prepare_worker).
prepare_worker("apt")

from services.apt.actions import ACTIONS, AptContext, prime, report
from services.apt.backend import wait_for_changes

run(
    "apt",
    ACTIONS,
    lambda w: AptContext(w.jobs, w.settings.apt, warm="apt" in w.settings.services),
    background=[prime],
    report=report,
)
# Normally every run has been waited for already; this also covers an event loop torn down
# around one: apt-get and dpkg are never left running unattended by our exit.
wait_for_changes()
