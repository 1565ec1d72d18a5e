"""The lossless compression rules of ``mappings/storage/compression.yaml``: which stored
objects are compressed, with which codec, when. Pure; may import mapping.tables.
"""
