"""The gateway: owns the MQTT link and routes commands to workers over ZeroMQ."""
