"""MLflow pyfunc flavour for MoFlow: `mlflow.pyfunc.load_model(uri).predict(df)` decodes one molecule per row of
a `seed` column (z ~ N(0, (temperature * prior std)^2), optional `temperature` column, default 0.85) and returns
its SMILES after MoFlow's validity correction (None if correction fails)."""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class MoFlowPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from momu.generate.moflow.model import load_moflow

        self.model = load_moflow(context.artifacts["moflow"])

    def predict(self, context, model_input: pd.DataFrame, params=None):  # hint: no schema inference
        import torch

        from momu.generate.moflow.sample import decode, sample_smiles

        if "seed" not in model_input.columns:
            raise ValueError("input needs a 'seed' column (one molecule per row)")
        temps = model_input["temperature"] if "temperature" in model_input.columns else [0.85] * len(model_input)
        z = torch.cat([self.model.sample_z(1, float(t), generator=torch.Generator().manual_seed(int(s)))
                       for s, t in zip(model_input["seed"], temps)])
        return sample_smiles(decode(self.model, z))


# MLflow's models-from-code entry point (this file is what the training job logs).
mlflow.models.set_model(MoFlowPyfunc())
