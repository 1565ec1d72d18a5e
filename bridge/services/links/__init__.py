"""The console's secret and the MIS's viewer links: which studies a patient, accession or
study UID names, each with a signed, short-lived URL that opens it in the viewer
(:mod:`.viewer_links`); the secret those links and the console's CSRF tokens are signed with
(:mod:`.secret`). May import: store, mapping, config, errors.
"""
