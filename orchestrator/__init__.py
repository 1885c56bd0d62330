"""The driver: CLI, Tuner construction, tracking and reports. Nothing here runs inside a trial."""
