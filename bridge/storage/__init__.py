"""Storage tiers: durable file placement (:mod:`.durable`), blob backends (:mod:`.blobs`),
nearest-copy reads with recall (:mod:`.reader`), long-term migration and removal
(:mod:`.migration`, :mod:`.longterm_delete`), online cleanup and retention (:mod:`.cleanup`,
:mod:`.retention`), usage sampling (:mod:`.usage`), the codecs compression uses
(:mod:`.codecs`) and the operators' actions (:mod:`.ops`, :mod:`.maintenance`). May import:
jobs, store, errors, config; never services (what storage needs of them is passed in).
"""
