"""Who may see which study (the seed: a doctor sees only the studies they uploaded or that
were shared with them, by another user or by the patient): the SQL clause every read of
patient data adds for a clinician (:mod:`.visibility`), and shares and consents
(:mod:`.shares`). May import: store, mapping, errors.
"""
