"""bridge: joins a hospital's information systems (HL7 v2, FHIR) to its imaging archive (DICOM)."""

__version__ = "0.1.0"
