"""What the operators' dashboard shows, counted in the database: HL7 messages per minute by
ACK code and received DICOM objects per minute over a window of minutes (:mod:`.buckets`
holds the window and the per-dialect minute bucket), the job queues' depths, failed jobs and
the reconciliation queue's size (:mod:`.counts`). Counts only, never patient data; every
query is a GROUP BY on an index range, cheap enough to be polled every few seconds.
May import: services.archive (its queue definition), jobs, store.
"""
