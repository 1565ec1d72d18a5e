"""The rule for updating a stored patient's demographics, shared by the per-message and the
batch HL7 paths and by FHIR. Pure; may import domain.
"""
