"""HL7 v2: the fast message reader (:mod:`.message`), message → domain commands
(:mod:`.to_domain`), ACKs (:mod:`.ack`), and the ``mappings/hl7v2`` tables (:mod:`.tables`).
Pure; may import domain, errors, mapping.tables.
"""
