"""Named evaluation protocols: ``paper`` (the paper's Table 1 protocol) and ``quick`` (a CPU smoke run)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PRESETS", "BenchmarkSpec", "EvalPreset", "get_preset"]


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark in a preset: how many samples per problem, and the name the paper gives the score."""

    name: str
    n: int = field(metadata={"help": "samples per problem"})
    label: str = field(default="", metadata={"help": "'avg@32' or 'pass@1'; default avg@n"})

    @property
    def metric_label(self) -> str:
        return self.label or f"avg@{self.n}"


@dataclass(frozen=True)
class EvalPreset:
    """A full protocol: benchmarks with their sample counts, and the decoding parameters."""

    name: str
    description: str
    benchmarks: tuple[BenchmarkSpec, ...]
    default_n: int = field(metadata={"help": "samples per problem for a benchmark the preset does not list"})
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 8192
    limit: int | None = field(default=None, metadata={"help": "problems per benchmark (None = all)"})

    def spec(self, benchmark: str) -> BenchmarkSpec:
        """The preset's spec for a benchmark, or a default one (``default_n`` samples, avg@n)."""
        for spec in self.benchmarks:
            if spec.name == benchmark:
                return spec
        return BenchmarkSpec(benchmark, self.default_n)


# The paper (FT §5.1, App. C.1): avg@32 on AIME24/25, HMMT Feb 2025 and AMC; pass@1 on MATH-500 and
# OlympiadBench; temperature 0.6, top-p 0.95, "same max length as training" (8K for the R1-Distill
# models, 4K for Qwen3-4B-Base / Llama-3.2-3B: pass --max-new-tokens 4096 for those). AIME 2026 is in the
# paper but not in the shared data. INFERRED: pass@1 is estimated from n=4 samples per problem (the
# paper does not say how many); with n samples the unbiased pass@1 estimate equals avg@n.
PAPER = EvalPreset(
    name="paper",
    description="the paper's protocol: avg@32 on AIME24/25, HMMT25, AMC23; pass@1 (n=4) on MATH-500, OlympiadBench",
    benchmarks=(
        BenchmarkSpec("aime24", 32),
        BenchmarkSpec("aime25", 32),
        BenchmarkSpec("hmmt_feb25", 32),
        BenchmarkSpec("amc23", 32),
        BenchmarkSpec("math500", 4, "pass@1"),
        BenchmarkSpec("olympiadbench", 4, "pass@1"),
    ),
    default_n=4,
    temperature=0.6,
    top_p=0.95,
    max_new_tokens=8192,
)

# A smoke run that finishes on a laptop CPU: a few problems, 2 samples each, short completions.
QUICK = EvalPreset(
    name="quick",
    description="CPU smoke run: 8 problems of MATH-500 and AIME24, 2 samples each, 256 new tokens",
    benchmarks=(BenchmarkSpec("math500", 2), BenchmarkSpec("aime24", 2)),
    default_n=2,
    temperature=0.6,
    top_p=0.95,
    max_new_tokens=256,
    limit=8,
)

PRESETS: dict[str, EvalPreset] = {p.name: p for p in (PAPER, QUICK)}


def get_preset(name: str) -> EvalPreset:
    """A preset by name; an unknown name lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown eval preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
