"""Models: GIN graph encoder, text encoder, projection heads, MoMu dual encoder."""
