"""The simulator's model catalog: real Together model ids with realistic context lengths and prices.

Other apps and tests import this module to know what the simulator serves; it has no dependencies.
Prices are USD per 1M tokens (reference §2.1); `created` values are fixed so output is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """One model as the simulator knows it; `to_json` is what GET /v1/models shows."""

    id: str
    type: str  # chat, language, code, image, embedding, moderation, rerank
    display_name: str
    organization: str
    created: int
    context_length: int | None
    input_price: float = 0.0
    output_price: float = 0.0
    base_price: float = 0.0  # per image / per request for image models
    finetune_price: float = 0.0
    # Per 1M prompt tokens served from the prompt cache; None: no prompt caching, no cached price shown.
    cached_input_price: float | None = None
    license: str = ""
    link: str = ""
    # Simulator-only facts, never shown in the API output:
    serverless: bool = True  # False: listed, but chat answers 400 model_not_available
    finetunable: bool = False
    param_count: int = 0
    embedding_dim: int = 0

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "type": self.type,
            "running": False,  # real records carry it; extra keys are allowed by every SDK
            "display_name": self.display_name,
            "organization": self.organization,
            "link": self.link,
            "license": self.license,
            "context_length": self.context_length,
            "pricing": {
                "hourly": 0,
                "input": self.input_price,
                "output": self.output_price,
                "base": self.base_price,
                "finetune": self.finetune_price,
            },
        }
        if self.cached_input_price is not None:  # an optional field (TypeScript SDK's ModelObject)
            data["pricing"]["cached_input"] = self.cached_input_price  # type: ignore[index]
        if self.context_length is None:  # image models come without one
            del data["context_length"]
        return data


_HF = "https://huggingface.co/"

_M = CatalogModel  # keeps the table below readable

MODELS: tuple[CatalogModel, ...] = (
    _M("meta-llama/Llama-3.3-70B-Instruct-Turbo", "chat", "Meta Llama 3.3 70B Instruct Turbo", "Meta",
       1733443200, 131072, 0.88, 0.88, finetune_price=2.9, license="Llama-3.3",
       link=_HF + "meta-llama/Llama-3.3-70B-Instruct", finetunable=True, param_count=70553706496),
    _M("meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", "chat", "Meta Llama 3.1 8B Instruct Turbo", "Meta",
       1721692800, 131072, 0.18, 0.18, finetune_price=0.48, license="Llama-3.1",
       link=_HF + "meta-llama/Llama-3.1-8B-Instruct", finetunable=True, param_count=8030261248),
    _M("meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo", "chat", "Meta Llama 3.1 70B Instruct Turbo", "Meta",
       1721692800, 131072, 0.88, 0.88, license="Llama-3.1",
       link=_HF + "meta-llama/Llama-3.1-70B-Instruct", param_count=70553706496),
    _M("meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo", "chat", "Meta Llama 3.1 405B Instruct Turbo", "Meta",
       1721692800, 130815, 3.5, 3.5, license="Llama-3.1",
       link=_HF + "meta-llama/Llama-3.1-405B-Instruct", param_count=405853388800),
    _M("meta-llama/Llama-3.2-3B-Instruct-Turbo", "chat", "Meta Llama 3.2 3B Instruct Turbo", "Meta",
       1727308800, 131072, 0.06, 0.06, finetune_price=0.48, license="Llama-3.2",
       link=_HF + "meta-llama/Llama-3.2-3B-Instruct", finetunable=True, param_count=3212749824),
    _M("meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "chat", "Llama 4 Maverick Instruct (17Bx128E)",
       "Meta", 1743897600, 1048576, 0.27, 0.85, cached_input_price=0.1, license="Llama-4",
       link=_HF + "meta-llama/Llama-4-Maverick-17B-128E-Instruct", param_count=401583781376),
    _M("Qwen/Qwen2.5-72B-Instruct-Turbo", "chat", "Qwen2.5 72B Instruct Turbo", "Qwen",
       1726531200, 131072, 1.2, 1.2, license="qwen",
       link=_HF + "Qwen/Qwen2.5-72B-Instruct", param_count=72706203648),
    _M("Qwen/Qwen2.5-7B-Instruct-Turbo", "chat", "Qwen2.5 7B Instruct Turbo", "Qwen",
       1726531200, 32768, 0.3, 0.3, finetune_price=0.48, license="apache-2.0",
       link=_HF + "Qwen/Qwen2.5-7B-Instruct", finetunable=True, param_count=7615616512),
    _M("Qwen/Qwen2.5-Coder-32B-Instruct", "code", "Qwen 2.5 Coder 32B Instruct", "Qwen",
       1731369600, 32768, 0.8, 0.8, license="apache-2.0",
       link=_HF + "Qwen/Qwen2.5-Coder-32B-Instruct", param_count=32763876352),
    _M("Qwen/QwQ-32B-Preview", "chat", "Qwen QwQ-32B-Preview", "Qwen",
       1732752000, 32768, 1.2, 1.2, license="apache-2.0",
       link=_HF + "Qwen/QwQ-32B-Preview", param_count=32763876352),
    _M("deepseek-ai/DeepSeek-V3", "chat", "DeepSeek V3-0324", "DeepSeek",
       1735171200, 131072, 1.25, 1.25, cached_input_price=0.5, license="deepseek",
       link=_HF + "deepseek-ai/DeepSeek-V3", param_count=684531386000),
    _M("deepseek-ai/DeepSeek-R1", "chat", "DeepSeek R1-0528", "DeepSeek",
       1737331200, 163840, 3.0, 7.0, license="mit",
       link=_HF + "deepseek-ai/DeepSeek-R1", param_count=684531386000),
    _M("mistralai/Mixtral-8x7B-Instruct-v0.1", "chat", "Mixtral-8x7B Instruct v0.1", "mistralai",
       1702339200, 32768, 0.6, 0.6, license="apache-2.0",
       link=_HF + "mistralai/Mixtral-8x7B-Instruct-v0.1", param_count=46702792704),
    _M("mistralai/Mistral-7B-Instruct-v0.3", "chat", "Mistral (7B) Instruct v0.3", "mistralai",
       1716422400, 32768, 0.2, 0.2, finetune_price=0.48, license="apache-2.0",
       link=_HF + "mistralai/Mistral-7B-Instruct-v0.3", finetunable=True, param_count=7248023552),
    _M("google/gemma-2-27b-it", "chat", "Gemma-2 Instruct (27B)", "Google",
       1719446400, 8192, 0.8, 0.8, license="gemma",
       link=_HF + "google/gemma-2-27b-it", param_count=27227128320),
    _M("meta-llama/Llama-Guard-3-8B", "moderation", "Meta Llama Guard 3 8B", "Meta",
       1721692800, 8192, 0.2, 0.2, license="Llama-3.1",
       link=_HF + "meta-llama/Llama-Guard-3-8B", param_count=8030261248),
    _M("BAAI/bge-large-en-v1.5", "embedding", "BAAI-Bge-Large-1p5", "BAAI",
       1695254400, 512, 0.02, 0.0, license="mit",
       link=_HF + "BAAI/bge-large-en-v1.5", embedding_dim=1024),
    _M("BAAI/bge-base-en-v1.5", "embedding", "BAAI-Bge-Base-1p5", "BAAI",
       1695254400, 512, 0.008, 0.0, license="mit",
       link=_HF + "BAAI/bge-base-en-v1.5", embedding_dim=768),
    _M("togethercomputer/m2-bert-80M-32k-retrieval", "embedding", "M2-BERT-Retrieval-32k", "Together",
       1699833600, 32768, 0.008, 0.0, license="apache-2.0",
       link=_HF + "togethercomputer/m2-bert-80M-32k-retrieval", embedding_dim=768),
    _M("Salesforce/Llama-Rank-V1", "rerank", "Salesforce Llama Rank V1 (8B)", "Salesforce",
       1724976000, 8192, 0.1, 0.1, license="llama3",
       link="https://blog.salesforceairesearch.com/llamarank/"),
    _M("black-forest-labs/FLUX.1-schnell", "image", "FLUX.1 [schnell]", "Black Forest Labs",
       1722470400, None, base_price=0.0027, license="apache-2.0",
       link=_HF + "black-forest-labs/FLUX.1-schnell"),
    # Listed by /models but not serverless: inference answers 400 model_not_available (reference §3.3).
    _M("meta-llama/Llama-2-70b-hf", "language", "LLaMA-2 (70B)", "Meta",
       1689552000, 4096, 0.9, 0.9, license="llama2",
       link=_HF + "meta-llama/Llama-2-70b-hf", serverless=False, param_count=68976648192),
)

BY_ID: dict[str, CatalogModel] = {model.id: model for model in MODELS}

DEFAULT_CHAT_MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
SMALL_CHAT_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"
DEFAULT_EMBEDDING_MODEL = "BAAI/bge-large-en-v1.5"
DEFAULT_IMAGE_MODEL = "black-forest-labs/FLUX.1-schnell"
NON_SERVERLESS_MODEL = "meta-llama/Llama-2-70b-hf"
# A model with a cached-input price: repeated leading messages are served from its prompt cache.
CACHED_PRICE_MODEL = "deepseek-ai/DeepSeek-V3"
# The model the demo scenario retires mid-run (a real model Together did retire).
REMOVABLE_MODEL = "Qwen/QwQ-32B-Preview"
FINETUNE_MODELS: tuple[str, ...] = tuple(model.id for model in MODELS if model.finetunable)

CHAT_TYPES = frozenset({"chat", "language", "code", "moderation"})


def get(model_id: str) -> CatalogModel | None:
    """The catalog entry for a model id, or None."""
    return BY_ID.get(model_id)
