"""DICOMweb (PS3.18) under ``/dicomweb``: QIDO-RS search, WADO-RS retrieve (whole objects,
metadata, bulk data, frames) and STOW-RS store, with the multipart codec they share.
May import: the HTTP adapter's deps, services (archive, egress), storage, store, mapping.
"""
