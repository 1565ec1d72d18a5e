"""The DICOM Application Entity: one pynetdicom server for the worklist SCP, MPPS SCP, Storage
SCP and Query/Retrieve SCP, with the association policy (AE titles, addresses) and the
DIMSE statuses of the bridge's errors. May import: services, storage, store, mapping,
config, errors; not the other adapters.
"""
