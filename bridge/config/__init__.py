"""The settings: one :class:`~bridge.config.settings.Settings` model (pydantic-settings),
validated once at start and frozen (:mod:`.settings`), with the checks it shares
(:mod:`.checks`), the legacy import sources' model (:mod:`.import_sources`), and the
listeners' TLS context built from them (:mod:`.tls`). The bottom
layer: imports nothing else of the bridge.
"""
