"""De-identified exports, the key records that stay home, restore of what comes back, and the
grid gateway. Uses :mod:`bridge.mapping.deid` (the pure profile) and the destinations'
connectors; the tables are :mod:`bridge.store.deid_models`."""
