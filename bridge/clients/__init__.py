"""Outbound connectors the services call: the FHIR REST client (:mod:`.fhir`, with the one table
that turns httpx's exceptions into the bridge's error kinds) and the MLLP client
(:mod:`.mllp`, for ``bridge hl7 send`` and the tests). The inbound side of each protocol is in
:mod:`bridge.adapters`. May import: errors, config only.
"""
