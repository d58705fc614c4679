"""Helpers for tests and benchmarks, never used by the library itself: synthetic pair predictions
with exact ground truth (:mod:`.synthetic_pairs`) and the deterministic weight refill of the parity
vectors (:mod:`.refill`)."""
