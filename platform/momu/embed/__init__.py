"""Batch embedding of molecule libraries and texts on Ray Data (`momu embed`).

sources: inputs -> deterministic parts; stages: the pipeline's UDFs (no Ray import); output: manifest, resume,
final files; job: the Ray Data wiring, summary and MLflow logging.
"""
