"""Rendered DICOMweb (PS3.18 8.3.5, 10.4.1.1.3 and the Thumbnail resources), the pure half:
the rendering query parameters and their rules (:mod:`.params`), the grayscale pipeline of
PS3.4 N.2 as lookup tables: Modality LUT (rescale), VOI window (PS3.3 C.11.2.1.2 LINEAR,
LINEAR_EXACT, SIGMOID) and MONOCHROME1 inversion (:mod:`.voi`), colour frames from their stored
layout to RGB (:mod:`.photometric`), and the source region and viewport sizes
(:mod:`.geometry`). Pure (numpy arrays in and out, no I/O); may import errors.
"""
