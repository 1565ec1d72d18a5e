"""Storage tiers: blob backends, long-term migration, nearest-copy reads, cleanup, usage."""
