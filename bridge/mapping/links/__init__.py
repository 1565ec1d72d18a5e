"""Viewer links for the MIS: the signed, short-lived token that opens one study in the
console's viewer without a log-in (:mod:`.signing`), and the console's CSRF token bound to a
login. Pure: HMAC over values, no I/O.
"""
