"""Request and response models of the MoMu HTTP API (they are also the OpenAPI schema at /docs).

Structure and types are checked by these models (FastAPI -> 422 naming the field). Limits that come from the
deployment's config (largest k, items per request, text length, ...) are checked by `check_*` helpers in
serving.app, which raise `InputError(field, reason)` -> 422 as well.
"""

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Request(BaseModel):
    # Unknown fields are an error: a typo such as {"top_k": 5} must not silently fall back to the default.
    model_config = ConfigDict(extra="forbid")


# -- requests ------------------------------------------------------------------------------------------------------

class SearchMoleculesRequest(_Request):
    """A text query -> the top-k molecules of the molecule index."""

    query: str = Field(..., description="free text, e.g. 'an aromatic carboxylic acid ester'",
                       examples=["The molecule is a monocarboxylic acid anion."])
    k: int = Field(10, ge=1, strict=True,
                   description="how many molecules to return (at most the server's limits.max_k)")
    draw: bool = Field(False, strict=True, description="include an SVG drawing of each molecule")


class SearchTextsRequest(_Request):
    """A molecule (SMILES) -> the top-k descriptions of the text index."""

    smiles: str = Field(..., description="the query molecule", examples=["CC(=O)Oc1ccccc1C(=O)O"])
    k: int = Field(10, ge=1, strict=True,
                   description="how many descriptions to return (at most the server's limits.max_k)")
    draw: bool = Field(False, strict=True, description="include an SVG drawing of the query molecule")


class EmbedRequest(_Request):
    """Exactly one of `smiles` (graph tower) or `texts` (text tower)."""

    smiles: Optional[list[str]] = Field(None, description="molecules to embed with the graph tower")
    texts: Optional[list[str]] = Field(None, description="texts to embed with the text tower")

    @model_validator(mode="after")
    def _exactly_one(self) -> "EmbedRequest":
        if (self.smiles is None) == (self.texts is None):
            raise ValueError("give exactly one of 'smiles' or 'texts'")
        return self


class Pair(_Request):
    smiles: str
    text: str


class SimilarityRequest(_Request):
    """(SMILES, text) pairs -> MoMu's cosine similarity of each pair's graph and text embeddings."""

    pairs: list[Pair] = Field(..., examples=[[{"smiles": "CCO", "text": "The molecule is a primary alcohol."}]])


# -- responses -----------------------------------------------------------------------------------------------------

class MoleculeHit(BaseModel):
    rank: int
    id: str
    smiles: str
    score: float = Field(..., description="cosine similarity of the query text and the molecule")
    svg: Optional[str] = Field(None, description="2D structure drawing (RDKit SVG) when draw=true")


class SearchMoleculesResponse(BaseModel):
    query: str
    k: int
    results: list[MoleculeHit]
    index_size: int
    model_version: str


class TextHit(BaseModel):
    rank: int
    id: str
    text: str
    score: float = Field(..., description="cosine similarity of the query molecule and the text")
    smiles: Optional[str] = Field(None, description="the molecule this description belongs to, when indexed")


class SearchTextsResponse(BaseModel):
    smiles: str = Field(..., description="the query molecule, canonical SMILES")
    k: int
    results: list[TextHit]
    svg: Optional[str] = Field(None, description="drawing of the query molecule when draw=true")
    index_size: int
    model_version: str


class EmbedResponse(BaseModel):
    kind: Literal["molecule", "text"]
    dim: int
    embeddings: list[list[float]] = Field(..., description="L2-normalised vectors, one per input, input order")
    model_version: str


class SimilarityResponse(BaseModel):
    scores: list[float] = Field(..., description="cosine similarity per pair, input order")
    model_version: str


class HealthResponse(BaseModel):
    status: Literal["ok"]


class IndexInfo(BaseModel):
    size: int
    dim: int
    kind: str
    model_info: dict = Field(default_factory=dict, description="model that produced the indexed embeddings")
    model_matches: Optional[bool] = Field(None, description="whether that model is the one served (None: unknown)")


class ModelInfo(BaseModel):
    name: str
    version: str
    source: str
    weights_sha256: str
    embedding_dim: int
    graph_encoder: str
    text_encoder: str
    device: str
    precision: str


class ModelsResponse(BaseModel):
    model: ModelInfo
    indexes: dict[str, IndexInfo]
    batching: dict
    limits: dict


class ErrorDetail(BaseModel):
    field: str = Field(..., description="where the problem is, e.g. 'k' or 'smiles[3]' ('' for the whole body)")
    reason: str


class ErrorResponse(BaseModel):
    error: str = Field(..., description="machine-readable class: invalid_request, malformed_json, "
                                        "payload_too_large, unauthorized, not_found, not_configured, unavailable")
    detail: list[ErrorDetail]
