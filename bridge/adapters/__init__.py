"""The protocol edges, one package each: :mod:`~bridge.adapters.mllp` (HL7 v2 over MLLP),
:mod:`~bridge.adapters.dicom` (the DICOM AE: worklist, MPPS, storage, Q/R) and
:mod:`~bridge.adapters.http` (FastAPI: FHIR, DICOMweb, the admin API).

They turn wire formats into calls of :mod:`bridge.services` and answers back, and translate
the bridge's errors into each protocol's answer (ACK, DIMSE status, OperationOutcome).
May import: services and everything below them. Never each other (an import-linter
contract in ``pyproject.toml``), never :mod:`bridge.app` or :mod:`bridge.cli`.
"""
