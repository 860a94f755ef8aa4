"""The dashboard's JSON API under /api: one route per `Dashboard` method. The pages' scripts call it,
and so can any client:

    POST /api/text                      {"text", "k", "features"}: per token its top features
    GET  /api/features?order=&limit=    features sorted by f1, precision, density, max_act or latent
    GET  /api/search?q=&limit=&offset=&sort=&floor=
                                        by id, label, label rules, top tokens, contexts: {"total",
                                        "hidden" (below the support floor), "results": one page}
    GET  /api/feature/{i}               everything the store holds on feature i; logit_effects: ranked
                                        within the tokens the model predicts (analysis/predicted.py);
                                        density_comparison: its density among all features' densities;
                                        cooccurring: the features firing on the same tokens (null: an
                                        older store; analysis/cooccurrence.py); loss_effect: the next
                                        tokens whose loss rises most when it is ablated (analysis/loss_effect.py)
    GET  /api/feature/{i}/summary       its label, precision, recall, density, max activation
    POST /api/feature/{i}/activations   {"text"}: feature i's activation on every token
    GET  /api/feature/{i}/trace?n=      the full documents of its top examples
    GET  /api/document/{doc}?feature=   a corpus document an example comes from, with a feature's activations
    POST /api/playground                {"prompt", "interventions": [{"feature", "kind", "value"}], "new_tokens"}
    POST /api/steer-curve               {"prompt", "feature", "alpha", "position", "steps"}: dose-response
    GET  /api/run                       configs, training curves, evaluation, store summary
    GET  /api/health
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from monosemantic.dashboard.service import SUPPORT_FLOOR, Dashboard


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently a default


class TextRequest(_Request):
    text: str
    k: int = 5
    features: int = 32


class ActivationsRequest(_Request):
    text: str


class InterventionSpec(_Request):
    feature: int
    kind: Literal["zero", "mean", "clamp", "steer"]
    value: float = Field(0.0, allow_inf_nan=False)


class CurveRequest(_Request):
    prompt: str
    feature: int
    alpha: float = Field(allow_inf_nan=False)
    position: str = "all"
    steps: int = 9


class PlaygroundRequest(_Request):
    prompt: str
    interventions: list[InterventionSpec] = []
    new_tokens: int = 16
    top: int = 10


def api_router(dash: Dashboard) -> APIRouter:
    """Routes are plain `def`s: FastAPI runs them in its thread pool, and the dashboard's locks
    serialise the model work among them."""
    api = APIRouter(prefix="/api")

    @api.get("/health")
    def health() -> dict:
        return {"ok": True, "run": dash.run_dir.name, "features": dash.n_latents}

    @api.post("/text")
    def text(req: TextRequest) -> dict:
        return dash.text(req.text, req.k, req.features)

    @api.get("/features")
    def features(
        order: Literal["f1", "precision", "density", "max_act", "latent"] = "f1",
        limit: int = 50,
        labelled: bool = False,
    ) -> list[dict]:
        return dash.listing(order, limit, labelled)

    @api.get("/search")
    def search(q: str, limit: int = 50, offset: int = 0, sort: str = "rank", floor: int = SUPPORT_FLOOR) -> dict:
        return dash.search(q, limit, offset, sort, floor)

    @api.get("/feature/{i}")
    def feature(i: int) -> dict:
        extra = {
            "logit_effects": dash.logit_effects(i),
            "density_comparison": dash.density_comparison(i),
            "cooccurring": dash.cooccurring(i),
            "loss_effect": dash.loss_effect(i),
        }
        return {**asdict(dash.feature(i)), **extra}

    @api.get("/feature/{i}/summary")
    def summary(i: int) -> dict:
        return dash.summary(i)

    @api.post("/feature/{i}/activations")
    def activations(i: int, req: ActivationsRequest) -> dict:
        return dash.feature_acts(i, req.text)

    @api.get("/feature/{i}/trace")
    def trace(i: int, n: int = 8) -> list[dict]:
        return dash.trace(i, n)

    @api.get("/document/{doc}")
    def document(doc: int, feature: int | None = None) -> dict:
        return dash.document(doc, feature)

    @api.post("/playground")
    def playground(req: PlaygroundRequest) -> dict:
        specs = [s.model_dump() for s in req.interventions]
        return dash.playground(req.prompt, specs, req.new_tokens, req.top)

    @api.post("/steer-curve")
    def steer_curve(req: CurveRequest) -> dict:
        return dash.dose_response(req.prompt, req.feature, req.alpha, req.position, req.steps)

    @api.get("/run")
    def run() -> dict:
        return dash.run()

    return api
