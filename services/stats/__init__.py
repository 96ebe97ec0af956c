"""The stats service: system status and periodic telemetry (psutil)."""
