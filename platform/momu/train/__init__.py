"""Training: the pure single-process contrastive loop (the reference for the Ray Train job)."""
