"""Metadata for images a legacy modality exported without DICOM (file-name patterns, sidecars,
the ``mappings/import`` tables). Pure; may import mapping.tables, mapping.translit.
"""
