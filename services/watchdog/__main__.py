import asyncio

from common.logs import setup_logging
from common.worker import load_or_exit, run_until_signalled
from services.watchdog.watch import run_watchdog

settings = load_or_exit("watchdog", None)
setup_logging("watchdog", settings.log_level)
asyncio.run(run_until_signalled(run_watchdog(settings)))
