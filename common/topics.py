"""Builds and parses every MQTT topic Tether uses. Nothing else formats topic strings.

>>> t = Topics("tether", "gw-01")
>>> t.cmd("stats", "get")
'tether/gw-01/cmd/stats/get'
>>> t.cmd_filter()
'tether/gw-01/cmd/#'
>>> t.parse_cmd("tether/gw-01/cmd/network/wifi/scan")
('network', 'wifi/scan')
>>> t.parse_cmd("tether/gw-02/cmd/stats/get") is None
True
>>> t.parse_cmd("tether/gw-01/cmd/stats/"), t.parse_cmd("tether/gw-01/cmd//get")
(('stats', ''), ('', 'get'))
>>> t.res("apt", "repos/list")
'tether/gw-01/res/apt/repos/list'
>>> t.job("j-42")
'tether/gw-01/jobs/j-42'
>>> t.status, t.health, t.stats, t.capabilities
('tether/gw-01/status', 'tether/gw-01/health', 'tether/gw-01/stats', 'tether/gw-01/capabilities')
>>> Topics.device_of("tether/gw-01/status", "tether")
'gw-01'
>>> valid_publish_topic("a/b/c"), valid_publish_topic("a/+/c"), valid_publish_topic("")
(True, False, False)
"""

from __future__ import annotations

import re

_SEGMENT = re.compile(r"^[a-z][a-z0-9_]*$")


class Topics:
    def __init__(self, prefix: str, device: str) -> None:
        self.prefix = prefix
        self.device = device
        self.base = f"{prefix}/{device}"
        self.status = f"{self.base}/status"
        self.health = f"{self.base}/health"
        self.stats = f"{self.base}/stats"
        self.capabilities = f"{self.base}/capabilities"

    def cmd(self, service: str, action: str) -> str:
        return f"{self.base}/cmd/{service}/{action}"

    def cmd_filter(self) -> str:
        return f"{self.base}/cmd/#"

    def res(self, service: str, action: str) -> str:
        return f"{self.base}/res/{service}/{action}"

    def job(self, job_id: str) -> str:
        return f"{self.base}/jobs/{job_id}"

    def jobs_filter(self) -> str:
        return f"{self.base}/jobs/+"

    def parse_cmd(self, topic: str) -> tuple[str, str] | None:
        """Split a command topic into (service, action); the action may contain '/'.
        Returns None for a topic that is not a command to this device. Empty or malformed
        parts are returned as they are, so the command still gets an error reply."""
        head = f"{self.base}/cmd/"
        if not topic.startswith(head):
            return None
        service, _, action = topic[len(head) :].partition("/")
        return service, action

    @staticmethod
    def device_of(topic: str, prefix: str) -> str | None:
        parts = topic.split("/")
        plen = len(prefix.split("/"))
        if topic.startswith(prefix + "/") and len(parts) > plen:
            return parts[plen]
        return None

    @staticmethod
    def status_filter(prefix: str) -> str:
        return f"{prefix}/+/status"


def valid_name_segment(name: str) -> bool:
    """Service and action path segments are lowercase identifiers."""
    return bool(_SEGMENT.match(name))


def valid_publish_topic(topic: str) -> bool:
    """A topic a reply may be published to: non-empty, no wildcards, no NUL, <= 1024 bytes."""
    return (
        0 < len(topic.encode()) <= 1024
        and "+" not in topic
        and "#" not in topic
        and "\x00" not in topic
    )
