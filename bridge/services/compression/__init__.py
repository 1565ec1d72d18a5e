"""Lossless compression of stored studies: the rules job and its hooks (:mod:`.compressor`)
and the safe replacement of one stored file by its verified compressed version
(:mod:`.replace`). May import: services.archive, storage (codecs, durable), jobs, store,
mapping.compression, errors, config.
"""
