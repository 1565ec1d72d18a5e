"""Group commit: work that arrives together shares one transaction. :mod:`.loop` for the
asyncio side (MLLP messages), :mod:`.threads` for threads (DICOM associations). Generic:
imports nothing of the bridge.
"""
