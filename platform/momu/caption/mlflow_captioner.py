"""MLflow pyfunc flavour of the decoder captioner: `mlflow.pyfunc.load_model(uri).predict(df)` captions a `smiles`
column (None for SMILES that cannot be read). The artifact is the exported captioner directory."""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class CaptionerPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from momu.caption.captioner import DecoderCaptioner

        self.captioner = DecoderCaptioner(context.artifacts["captioner"])

    def predict(self, context, model_input: pd.DataFrame, params=None):  # hint: no schema inference
        if "smiles" not in model_input.columns:
            raise ValueError("input needs a 'smiles' column")
        results = self.captioner.caption_smiles(list(model_input["smiles"]))
        return [getattr(r, "caption", None) for r in results]


# MLflow's models-from-code entry point (what momu.caption.train logs).
mlflow.models.set_model(CaptionerPyfunc())
