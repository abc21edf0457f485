"""What a model name says: the provider a prefix names, the model's maker, its undated family, and which
priced names are close to it. Provider names are litellm's (`litellm_provider` in its price file)."""

import heapq
import re
from collections import Counter, defaultdict
from difflib import SequenceMatcher
from operator import add
from typing import Iterable, NamedTuple

#: litellm names that are one provider with one price list: routes and endpoints of the same bill.
#: Distinct on purpose: gemini (Google AI Studio) and vertex_ai, azure (Azure OpenAI) and azure_ai (Foundry),
#: openai and chatgpt (a subscription), every gateway and host.
_SAME_PROVIDER = {
    "bedrock_converse": "bedrock", "bedrock_mantle": "bedrock",
    "azure_text": "azure",
    "vertex_ai_beta": "vertex_ai",
    "cohere_chat": "cohere",
    "codestral": "mistral",
    "meta": "meta_llama",
    "ollama_chat": "ollama",
    "llama.cpp": "llamacpp",
}
# `text-completion-openai`, `vertex_ai-anthropic_models`, `fireworks_ai-embedding-models`: routes of one provider.
_ROUTE = re.compile(r"text-completion-(?P<base>.+)|(?P<family>[a-z0-9_]+?)-[a-z0-9_-]*models")

#: Org prefixes that gateways and Hugging Face write before a model (`google/gemini-2.5-pro`,
#: `meta-llama/Llama-3.3-70B-Instruct`): they name the maker, never a provider.
_ORGS = {
    "google": "gemini", "mistralai": "mistral", "deepseek-ai": "deepseek", "x-ai": "xai", "meta-llama": "meta_llama",
    "qwen": "dashscope", "moonshotai": "moonshot", "zai-org": "zai", "z-ai": "zai", "minimaxai": "minimax",
}
#: Makers that sell their own models first-hand, as litellm names them.
_MAKERS = frozenset({"openai", "anthropic", "gemini", "mistral", "deepseek", "xai", "meta_llama", "cohere",
                     "dashscope", "moonshot", "zai", "minimax", "ai21", "perplexity"})
# A bare name's maker by its family name (`gpt-*` is OpenAI's, `claude-*` Anthropic's ...).
_MAKER_OF_NAME = re.compile("|".join(f"(?P<{maker}>{pattern})" for maker, pattern in (
    ("openai", r"gpt-|chatgpt-|o\d|text-embedding-|(?:omni|text)-moderation|dall-e|whisper-|tts-|davinci|babbage"
               r"|computer-use|sora"),
    ("anthropic", r"claude"),
    ("gemini", r"gemini|gemma|learnlm|imagen|veo-|lyria"),
    ("mistral", r"mistral|mixtral|codestral|ministral|magistral|devstral|pixtral|voxtral|open-mi[sx]tral"),
    ("deepseek", r"deepseek"),
    ("xai", r"grok"),
    ("meta_llama", r"llama"),
    ("cohere", r"command|c4ai-|embed-(?:english|multilingual)|rerank-"),
    ("dashscope", r"qwen|qwq"),
    ("moonshot", r"kimi"),
    ("zai", r"glm-"),
    ("minimax", r"minimax"),
    ("ai21", r"jamba"),
    ("perplexity", r"sonar"),
)), re.IGNORECASE)

#: When no maker prices a bare name, whose quote stands in, best first: gateways that pass the maker's list
#: price through, then the clouds, then hosts that price their own inference; any other provider after them.
_STAND_INS = ("openrouter", "vercel_ai_gateway", "vertex_ai", "bedrock", "azure", "azure_ai", "together_ai",
              "fireworks_ai", "deepinfra", "groq", "replicate")
_STAND_IN_RANK = {provider: rank for rank, provider in enumerate(_STAND_INS)}

_DATED = re.compile(r"(?:-|@)(?:\d{8}|\d{4}-\d{2}-\d{2})(?:-v\d+(?::\d+)?)?$")


def provider_family(name: str) -> str:
    """The provider a litellm provider name (or a caller's spelling of it) bills as."""
    name = name.strip().lower()
    route = _ROUTE.fullmatch(name)
    if route:
        name = route["base"] or route["family"]
    return _SAME_PROVIDER.get(name, name)


def names_a_provider(segment: str) -> bool:
    """A name's first segment names a provider (`groq/...`, `acme/...`) unless it is an org (`google/...`)."""
    return segment.lower() not in _ORGS


def maker_of_prefix(segment: str) -> str | None:
    """The maker an inner prefix names: `openai` in `openrouter/openai/gpt-4o`, `google` in `google/gemini-x`."""
    org = _ORGS.get(segment.lower())
    if org is not None:
        return org
    family = provider_family(segment)
    return family if family in _MAKERS else None


def maker_of_name(bare: str) -> str | None:
    match = _MAKER_OF_NAME.match(bare)
    return match.lastgroup if match else None


def stand_in_rank(provider: str | None) -> int:
    return _STAND_IN_RANK.get(provider or "", len(_STAND_INS))


def undated(name: str) -> str:
    """`claude-x-20250219` -> `claude-x`; a name without a date is itself."""
    return _DATED.sub("", name)


class Asked(NamedTuple):
    """A name as asked for: the provider it must be priced by, if named, and the model within it."""

    name: str
    provider: str | None  # the provider family named by the request, else by the name's first segment
    spelt: str | None  # that provider as spelt (`bedrock_mantle`), to prefer its own keys within the family
    strict: bool  # named by the request: even an exact key must be that provider's
    path: str  # the name within the provider: `openai/gpt-4o` of `openrouter/openai/gpt-4o`
    maker: str | None  # the maker the path's org prefix names, else the one its family name says
    explicit_maker: bool  # the maker is written in the name (`anthropic/claude-x` within openrouter)
    bare: str  # the last segment


def ask(name: str, provider: str | None) -> Asked:
    head, slash, rest = name.partition("/")
    if provider:
        family, strict = provider_family(provider), True
        within = bool(slash) and provider_family(head) == family
        path, spelt = (rest, head) if within else (name, provider)
    elif slash and names_a_provider(head):
        family, spelt, strict, path = provider_family(head), head, False, rest
    else:
        family, spelt, strict, path = None, None, False, name
    org, slash, _ = path.partition("/")
    prefixed = maker_of_prefix(org) if slash else None
    bare = path.rpartition("/")[2]
    return Asked(name, family, spelt, strict, path, prefixed or maker_of_name(bare), prefixed is not None, bare)


_SHORTLIST = 40  # names difflib ranks, of those sharing the most letter pairs with the one asked for


def _pairs(text: str) -> set[str]:
    padded = f"^{text}$"
    return set(map(add, padded, padded[1:]))


class Suggester:
    """Priced names close to a misspelt one, fast over thousands: an index of letter pairs picks a shortlist
    (the names sharing most pairs), which difflib ranks, so a call costs milliseconds, not a scan.

    Its names, lower-cased: every bare name (for a name of no provider) and every name within a provider
    (`eu/gpt-4o` of `azure/eu/gpt-4o`, for that provider's), each with the keys it stands for."""

    def __init__(self, names: Iterable[tuple[str, str | None, str]]) -> None:
        """`names`: (key, its provider, its name within the provider) of every priced key."""
        keys_of: defaultdict[str, list[str]] = defaultdict(list)
        providers_of: defaultdict[str, set[str | None]] = defaultdict(set)
        bares: set[str] = set()
        for key, provider, path in names:
            path = path.lower()
            bare = path.rpartition("/")[2]
            bares.add(bare)
            for text in {path, bare}:
                keys_of[text].append(key)
                providers_of[text].add(provider)
        self.texts = list(keys_of)
        self.keys = list(keys_of.values())
        self.scopes = [frozenset(providers_of[text]) for text in self.texts]
        self.is_bare = [text in bares for text in self.texts]
        self.providers = frozenset().union(*self.scopes)
        pairs_of = [_pairs(text) for text in self.texts]
        self.sizes = [len(pairs) for pairs in pairs_of]
        postings: defaultdict[str, list[int]] = defaultdict(list)
        for i, pairs in enumerate(pairs_of):
            for pair in pairs:
                postings[pair].append(i)
        self.postings = dict(postings)

    def close(self, word: str, scope: str | None, cutoff: float = 0.6) -> list[tuple[str, list[str]]]:
        """The names at least `cutoff` similar to `word` (difflib's ratio), closest first, with their keys:
        `scope`'s names within it, or (None) the bare names."""
        pairs = _pairs(word)
        shared: Counter[int] = Counter()
        for pair in pairs:
            shared.update(self.postings.get(pair, ()))
        if scope is None:
            candidates = [i for i in shared if self.is_bare[i]]
        else:
            candidates = [i for i in shared if scope in self.scopes[i]]
        size = len(pairs)
        shortlist = heapq.nlargest(_SHORTLIST, candidates, key=lambda i: shared[i] / (size + self.sizes[i]))
        matcher = SequenceMatcher(autojunk=False)
        matcher.set_seq2(word)
        scored = []
        for i in shortlist:
            matcher.set_seq1(self.texts[i])
            if matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff:
                ratio = matcher.ratio()
                if ratio >= cutoff:
                    scored.append((-ratio, self.texts[i], i))
        return [(text, self.keys[i]) for _, text, i in sorted(scored)]
