"""The composition root: settings → engine → services → listeners and background work, and
their ordered shutdown (:mod:`.runtime`); the background jobs' wiring (:mod:`.background`);
the JSON log format (:mod:`.logging_setup`). The only place where adapters, clients and
services are put together. May import anything but :mod:`bridge.cli`.
"""
