"""De-identification, pure: PS3.15 Annex E as data (``mappings/deid/``), the plan a
destination's options make of it, keyed pseudonyms, the data-set transform, pixel rules, and
re-identification of what comes back. No I/O beyond reading the tables once; the keys, the
database and the destinations are :mod:`bridge.services.deid`'s."""
