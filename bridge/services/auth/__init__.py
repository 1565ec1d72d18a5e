"""Who may call the bridge: API tokens for systems (:mod:`.tokens`). May import: store,
errors.
"""
