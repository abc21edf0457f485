"""Tiers: lightweight, midweight, heavyweight, from the config's maps or a model's blended price."""

from dataclasses import dataclass, field

from budgetd.model import LOCAL_PROVIDERS, canonical_tier


@dataclass(frozen=True)
class TierRules:
    models: dict[str, str] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=lambda: {p: "lightweight" for p in LOCAL_PROVIDERS})
    lightweight_below_per_mtok: float = 1.0
    midweight_below_per_mtok: float = 10.0

    def tier_of(self, model: str, provider: str | None, input_per_mtok: float, output_per_mtok: float) -> str:
        mapped = self.models.get(model)
        if mapped is None and "/" in model:
            mapped = self.models.get(model.split("/", 1)[1])
        if mapped is None and provider is not None:
            mapped = self.providers.get(provider)
        if mapped is not None:
            return canonical_tier(mapped) or "heavyweight"
        blended = (input_per_mtok + output_per_mtok) / 2
        if blended < self.lightweight_below_per_mtok:
            return "lightweight"
        if blended < self.midweight_below_per_mtok:
            return "midweight"
        return "heavyweight"
