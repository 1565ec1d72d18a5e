"""The ``bridge`` command line (typer): :mod:`.main` is the root command; one module per
command group (:mod:`.serve`, :mod:`.hl7`, :mod:`.token`, :mod:`.worklist`,
:mod:`.storage`, :mod:`.legacy_import`), all sharing :mod:`.common` (the ``--config``
option and settings loading), which imports none of them. The top layer: may import
anything.
"""
