"""Search spaces as data: one module per space, each exposing ``SPACE`` (and ``DESCRIPTION``).

Modules are looked up by name explicitly in ``orchestrator.driver.spaces``; there is no registry.
"""
