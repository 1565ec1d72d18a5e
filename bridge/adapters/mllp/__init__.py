"""HL7 v2 over MLLP: the asyncio listener that frames messages, hands them to the intake queue
(:mod:`bridge.services.hl7.intake`) and writes each ACK back. May import: services (hl7,
group_commit), mapping.hl7, errors; not the other adapters.
"""
