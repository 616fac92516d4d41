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


class CaptionRequest(_Request):
    """Molecules (SMILES) -> the retrieval captioner's caption of each: the description of its nearest known
    molecule in the caption pool."""

    smiles: list[str] = Field(..., description="molecules to caption", examples=[["CC(=O)Oc1ccccc1C(=O)O"]])
    k: int = Field(1, ge=1, strict=True, description="neighbours to return per molecule, best first (at most "
                                                      "limits.max_k); the caption is the first one's description")
    draw: bool = Field(False, strict=True, description="include SVG drawings of each query and neighbour")


MAX_GENERATE_N = 50  # molecules one POST /v1/generate may ask for


class GenerateRequest(_Request):
    """A description -> new molecules whose MoMu graph embeddings are near the text's (the MoMu-guided genetic
    algorithm of `momu generate`), or, with `edit`, that molecule edited towards the text."""

    text: str = Field(..., description="the prompt, ChEBI-20 style", examples=["The molecule is a monocarboxylic acid."])
    n: int = Field(10, ge=1, le=MAX_GENERATE_N, strict=True, description="molecules to return, best first (generate mode; an "
                                                              "edit returns one molecule per lambda of the server's "
                                                              "sweep)")
    edit: Optional[str] = Field(None, description="editing mode: the SMILES to edit (total + lambda * Tanimoto to "
                                                  "it, one molecule per lambda)", examples=["CC(=O)Oc1ccccc1C(=O)O"])
    budget: Optional[float] = Field(None, gt=0, strict=True, description="seconds the search may take (default: the "
                                    "server's generate.default_seconds; at most generate.max_seconds)")
    draw: bool = Field(True, strict=True, description="include an SVG drawing of each molecule")


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


class CaptionNeighbour(BaseModel):
    rank: int
    id: str = Field(..., description="pool id: <source>:<CID>")
    cid: str
    smiles: str
    similarity: float = Field(..., description="the captioner's score (similarity_kind)")
    tanimoto: float = Field(..., description="Morgan r2/2048 Tanimoto to the query")
    caption: str = Field(..., description="this neighbour's description")
    source: str
    svg: Optional[str] = None


class CaptionItem(BaseModel):
    """One molecule's caption, or its error (error set, caption null)."""

    input: str
    smiles: Optional[str] = Field(None, description="canonical SMILES of the query")
    caption: Optional[str] = Field(None, description="the description of the nearest known molecule")
    label: Optional[str] = Field(None, description="what the caption is (retrieved, not generated)")
    captioner: Optional[str] = None
    similarity_kind: Optional[str] = None
    neighbours: list[CaptionNeighbour] = Field(default_factory=list)
    svg: Optional[str] = Field(None, description="drawing of the query when draw=true")
    error: Optional["ErrorDetail"] = Field(None, description="why this molecule was not captioned")


class CaptionResponse(BaseModel):
    results: list[CaptionItem]
    captioner: str
    captioner_version: str
    pool_size: int


class GeneratedMolecule(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    rank: int = Field(..., description="1 = best (generate: by score; edit: the lambda sweep's order)")
    smiles: str
    score: float = Field(..., description="the GA's total: cosine + QED - SA - size penalties (edit: without the "
                                          "lambda * Tanimoto term)")
    cosine: float = Field(..., description="MoMu cosine of the prompt and the molecule")
    qed: float
    sa: float = Field(..., description="synthetic accessibility, 1 (easy) .. 10 (hard)")
    lambda_: Optional[float] = Field(None, alias="lambda", description="edit: the lambda this molecule is best for")
    tanimoto: Optional[float] = Field(None, description="edit: Morgan r=2 Tanimoto to the input")
    from_pool: Optional[bool] = Field(None, description="generate: a start-pool molecule, not a new one")
    is_input: Optional[bool] = Field(None, description="edit: the input itself")
    svg: Optional[str] = Field(None, description="2D structure drawing when draw=true")


class GenerateResponse(BaseModel):
    text: str
    mode: Literal["generate", "edit"]
    edit: Optional[str] = Field(None, description="edit: the input molecule, canonical SMILES")
    method: str = Field(..., description="the generator: momu-graph-ga (mol-ga Graph GA operators, MoMu cosine + "
                                         "QED/SA/size priors)")
    molecules: list[GeneratedMolecule]
    evaluations: int = Field(..., description="molecules embedded by the GIN for this request")
    generations: int
    seconds: float = Field(..., description="time the search took")
    budget_seconds: float = Field(..., description="the time budget it ran under")
    stopped_by: str = Field(..., description="what ended the search: seconds, evaluations, stalled, max_generations "
                                             "(edit: one per lambda)")
    pool_size: int
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


class CaptionerInfo(BaseModel):
    captioner: str
    version: str
    kind: str
    pool_size: int
    pool: str
    embeddings_model_sha256: Optional[str] = None


class GeneratorInfo(BaseModel):
    method: str
    pool: str
    pool_size: int
    default_seconds: float
    max_seconds: float
    max_evaluations: int
    max_n: int
    edit_lambdas: list[float]
    allowed_elements: list[str]
    model_version: str


class ModelsResponse(BaseModel):
    model: ModelInfo
    indexes: dict[str, IndexInfo]
    captioner: Optional[CaptionerInfo] = Field(None, description="the retrieval captioner, when configured")
    generator: Optional[GeneratorInfo] = Field(None, description="POST /v1/generate's generator, when configured")
    batching: dict
    limits: dict


class ErrorDetail(BaseModel):
    field: str = Field(..., description="where the problem is, e.g. 'k' or 'smiles[3]' ('' for the whole body)")
    reason: str


class ErrorResponse(BaseModel):
    error: str = Field(..., description="machine-readable class: invalid_request, malformed_json, "
                                        "payload_too_large, unauthorized, not_found, not_configured, unavailable, "
                                        "timeout")
    detail: list[ErrorDetail]


CaptionItem.model_rebuild()
