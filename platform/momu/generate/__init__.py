"""Text -> molecule generation: metrics (MolT5's recipe + FCD with a fixed padding policy) and the
`momu evaluate generation` command. Pure RDKit/torch; no Ray."""

from momu.generate.metrics import (
    FCD_POLICY,
    fcd_common_pad,
    generation_metrics,
    molecule_metrics,
)
from momu.generate.predictions import read_predictions

__all__ = ["FCD_POLICY", "fcd_common_pad", "generation_metrics", "molecule_metrics", "read_predictions"]
