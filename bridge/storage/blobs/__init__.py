"""Blob stores for the long-term tier: the interface (:mod:`.protocol`), the file-system and
S3 backends (:mod:`.file_store`, :mod:`.s3_store`) that import it, and the factory that
builds one from its URL (:mod:`.factory`), which the interface module does not import.
May import: storage.durable, config.
"""
