"""The sweep's driver: what runs, in which order, and how (options, spaces, tuner, retunes)."""
