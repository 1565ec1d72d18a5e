"""Objects on their way out of the bridge (C-MOVE, C-GET, WADO-RS, forwarding, publishing)
carry what the database says now: the MIS values (:mod:`.objects`), parts of objects for
WADO-RS (:mod:`.parts`), and decompression for peers that need it (:mod:`.transcode`).
May import: store, mapping.dicom, domain.
"""
