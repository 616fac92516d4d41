"""MLflow pyfunc flavour for MoMu: `mlflow.pyfunc.load_model(uri).predict(df)` embeds a `smiles` or `text`
column. The weights are the saved MoMu directory (safetensors), loaded by MoMu.from_pretrained."""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class MoMuPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from momu.models.momu import MoMu

        self.model = MoMu.from_pretrained(context.artifacts["momu"]).eval()

    # The DataFrame hint tells MLflow not to infer a schema from hints (the frame holds either of two columns);
    # without any hint it warns on every definition of this class.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        """DataFrame with a `smiles` column (graph tower) or a `text` column (text tower) -> list of embeddings
        (None for SMILES that cannot be featurized)."""
        from momu.chem.featurize import MolGraph, featurize_smiles

        if "smiles" in model_input.columns:
            graphs = [featurize_smiles(s) for s in model_input["smiles"]]
            good = [i for i, g in enumerate(graphs) if isinstance(g, MolGraph)]
            emb = self.model.embed_graphs([graphs[i] for i in good],  # SMILES: for the fingerprint baseline
                                          smiles=[model_input["smiles"].iloc[i] for i in good]).tolist()
            out = [None] * len(graphs)
            for i, e in zip(good, emb):
                out[i] = e
            return out
        if "text" in model_input.columns:
            return self.model.embed_texts(list(model_input["text"])).tolist()
        raise ValueError("input needs a 'smiles' or a 'text' column")


# MLflow's models-from-code entry point (this file is what `log_momu_model` logs).
mlflow.models.set_model(MoMuPyfunc())
