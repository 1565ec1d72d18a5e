"""HL7 v2 intake: the queue that prepares each message as it arrives and group-commits
(:mod:`.intake`), logging, de-duplication, mapping and applying (:mod:`.ingest`,
:mod:`.batch_apply`), and browsing the message log (:mod:`.message_log`). May import:
services.patients, services.worklist, services.group_commit, store, mapping.hl7, domain,
errors, config.
"""
