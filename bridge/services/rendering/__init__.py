"""Rendered DICOMweb, the half that reads and writes: one frame of a stored instance read from
its file (:mod:`.frames`: only that frame's bytes for an uncompressed object, decoded with
pydicom and its plugins for the archive's lossless syntaxes, a bounded cache of headers and
of decoded frames), and the rendered image produced and encoded with Pillow (:mod:`.render`).
The pixel math is :mod:`bridge.mapping.rendering`. May import egress (the header reader),
mapping.rendering, errors.
"""
