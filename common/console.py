"""``tether console``: serve the web console (the static files in ``web/``) on a local port.

The console is a static page: the browser connects to the broker itself (MQTT over
WebSocket), so this server only hands out files. It binds to 127.0.0.1 by default, serves
nothing outside ``web/``, and sends a Content-Security-Policy that lets the page talk only to
itself and to WebSocket brokers.

    url, stop = start_console(8080, broker="ws://localhost:9001")
    ...
    stop()
"""

from __future__ import annotations

import functools
import http.server
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; "
    "frame-ancestors 'none'"
)


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".css": "text/css",
        ".svg": "image/svg+xml",
        ".md": "text/plain; charset=utf-8",
    }

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def list_directory(self, path: str | Any) -> None:
        self.send_error(404, "Not found")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a local static server: quiet


def console_url(host: str, port: int, broker: str | None = None) -> str:
    url = f"http://{host}:{port}/"
    if broker:
        url += "?" + urllib.parse.urlencode({"broker": broker})
    return url


def start_console(
    port: int = 8080,
    host: str = "127.0.0.1",
    broker: str | None = None,
    web_dir: Path = WEB_DIR,
) -> tuple[str, Callable[[], None]]:
    """Serve ``web_dir`` on ``host:port`` (0 picks a free port) in a background thread.

    Returns the console's URL (with ``?broker=`` when given: the page then connects to that
    broker at once) and a function that stops the server. Raises OSError when the port is
    taken, and FileNotFoundError when the console's files are missing."""
    if not (web_dir / "index.html").is_file():
        raise FileNotFoundError(f"the web console's files are missing: {web_dir}/index.html")
    if not (web_dir / "vendor" / "mqtt.min.js").is_file():
        raise FileNotFoundError(
            f"{web_dir}/vendor/mqtt.min.js is missing; run scripts/build-web to fetch MQTT.js"
        )
    handler = functools.partial(_Handler, directory=str(web_dir))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="tether-console", daemon=True)
    thread.start()
    actual = server.server_address[1]

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return console_url(host, int(actual), broker), stop


def run_console(port: int, host: str, broker: str | None) -> int:
    """Serve until Ctrl-C (the ``tether console`` command)."""
    import sys
    import time

    try:
        url, stop = start_console(port, host, broker)
    except (OSError, FileNotFoundError) as err:
        print(f"tether console: {err}", file=sys.stderr)
        return 1
    print(f"Tether console: {url}\nPress Ctrl-C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0
