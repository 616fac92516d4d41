"""Cross-modal retrieval: pure metrics (MoMu's 1-of-64 protocol, full rank, Text2Mol pool), the evaluation job,
report tables and VSE++ retrieval finetuning (the pretraining job with MoMu's recipe)."""
