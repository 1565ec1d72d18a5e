"""DICOM datasets ↔ the archive: what the index keeps of a header (:mod:`.index_values`), the
real character set of undeclared text (:mod:`.charset`), Q/R identifiers → queries and
results → identifiers (:mod:`.qr_query`, :mod:`.qr_results`), QIDO-RS parameters
(:mod:`.qido_params`), the DICOM JSON model (:mod:`.json_model`), the MIS values patched into
objects on their way out (:mod:`.patch`), and the reconciliation policy of
``mappings/dicom/reconciliation.yaml`` (:mod:`.reconciliation`). Pure; may import
mapping.worklist (matching types), mapping.translit, domain, errors.
"""
