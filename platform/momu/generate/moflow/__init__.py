"""MoFlow (Zang & Wang 2020) in torch: the ZINC250k representation, the flow, its validity correction, training
on Ray Train (`momu finetune moflow`), sampling and quality metrics, and latent optimisation against MoMu."""
