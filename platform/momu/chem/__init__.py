"""Chemistry: featurization, graph columns, augmentations (RDKit + numpy; no Ray)."""
