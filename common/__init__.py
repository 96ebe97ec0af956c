"""The contract every Tether process shares: messages, errors, dispatch, IPC, config."""

__version__ = "0.1.0"
