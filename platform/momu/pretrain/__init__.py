"""Contrastive pretraining: the pure single-process reference loop (local), the shared collation/objective
(contrastive), the Ray Data ingest (data) and the Ray Train job (ray_train); `momu train-local`, `momu pretrain`."""
