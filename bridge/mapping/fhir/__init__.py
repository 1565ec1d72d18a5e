"""FHIR ↔ the domain and the archive, for R4 and R5: data types, Patient, ServiceRequest,
ImagingStudy and Endpoint, Bundles, search parameters, the CapabilityStatement,
OperationOutcomes, version handling, and the ``mappings/fhir`` tables. Pure; may import
domain, errors, mapping.tables.
"""
