"""Logging for processes run by supervisord: one line per record on stderr, no timestamps
doubled by a journal, the service name first so interleaved logs stay readable."""

from __future__ import annotations

import logging
import sys


def setup_logging(service: str, level: str = "info") -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho logs every packet at debug; keep it quiet unless asked.
    logging.getLogger("mqtt").setLevel(max(root.level, logging.INFO))
    return logging.getLogger(f"tether.{service}")
