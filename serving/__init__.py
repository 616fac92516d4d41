"""MoMu's Ray Serve application (import path `serving.app:app`); see serving/app.py and serving/config.yaml."""
