"""Orders and the Modality Worklist: order commands from HL7, FHIR and the API
(:mod:`.orders`), MPPS from modalities (:mod:`.mpps`), and worklist queries (:mod:`.query`).
May import: services.patients, store, mapping.worklist, domain, errors, config.
"""
