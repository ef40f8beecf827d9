"""Named problem sets: the paper's training sets and benchmarks, with their hub ids and local file names.

Each entry says where the set lives on the Hugging Face Hub (id, config, split, column mapping) and what its
file is called in a local data folder (the JSON Lines files of ``shared/data``, whose schema is
``id, problem, answer, source`` plus optional fields). A local folder always wins over the hub: pass
``data_dir=`` or set ``CONSPO_DATA_DIR``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DATA_DIR_ENV",
    "SOURCE_PROVIDERS",
    "DatasetSpec",
    "ProblemSource",
    "get_dataset_spec",
    "get_source",
    "list_datasets",
    "list_sources",
    "register_dataset",
    "register_source",
]

DATA_DIR_ENV = "CONSPO_DATA_DIR"


def _gsm8k_answer(value: Any) -> Any:
    # The hub's answer column is the whole rationale ending in "#### 1,450": keep the number after ####.
    if isinstance(value, str) and "####" in value:
        return value.rsplit("####", 1)[1].strip().replace(",", "")
    return value


def _number_to_str(value: Any) -> Any:
    # Hub copies of AIME/AMC store answers as numbers (27 or 27.0); the verifier wants the string "27".
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _first_of_list(value: Any) -> Any:
    # OlympiadBench keeps final answers as a one-element list of "$...$" strings.
    if isinstance(value, list) and value:
        value = ", ".join(str(v) for v in value)
    return re.sub(r"^\$+|\$+$", "", value).strip() if isinstance(value, str) else value


ANSWER_TRANSFORMS: dict[str, Callable[[Any], Any]] = {
    "gsm8k_hash": _gsm8k_answer,
    "number_to_str": _number_to_str,
    "first_of_list": _first_of_list,
}


@dataclass(frozen=True)
class DatasetSpec:
    """Where a named problem set lives (hub and local) and how its columns map onto ``Problem``."""

    name: str
    description: str
    kind: str
    """``train`` or ``benchmark``."""
    local_files: dict[str, str]
    """Split -> file name inside a data folder; the first entry is the default split."""
    hub_id: str | None = None
    """Public Hugging Face Hub dataset id (None: only available as a local file)."""
    hub_config: str | None = None
    """Hub configuration (subset) name."""
    hub_splits: dict[str, str] = field(default_factory=dict)
    """Our split name -> the hub's split name (default: the same name)."""
    columns: dict[str, str] = field(default_factory=dict)
    """Hub column mapping, ``{"problem": ..., "answer": ..., "id": ...}`` (dotted paths reach into structs)."""
    answer_transform: str | None = None
    """Name in ``ANSWER_TRANSFORMS`` applied to hub answers before validation."""

    @property
    def default_split(self) -> str:
        return next(iter(self.local_files))

    def hub_split(self, split: str) -> str:
        return self.hub_splits.get(split, split)


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec, *, overwrite: bool = False) -> DatasetSpec:
    """Add a named set (refuses a taken name unless ``overwrite``)."""
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    if spec.answer_transform is not None and spec.answer_transform not in ANSWER_TRANSFORMS:
        raise ValueError(
            f"unknown answer_transform {spec.answer_transform!r}; known: {sorted(ANSWER_TRANSFORMS)}"
        )
    _REGISTRY[spec.name] = spec
    return spec


def get_dataset_spec(name: str) -> DatasetSpec | None:
    """The registered set called ``name`` (case-insensitive, ``-`` and ``_`` alike), or None."""

    def squash(text: str) -> str:
        return text.lower().replace("-", "").replace("_", "")

    key = squash(name)
    return next((spec for spec_name, spec in _REGISTRY.items() if squash(spec_name) == key), None)


def list_datasets() -> dict[str, DatasetSpec]:
    """Every registered set, by name."""
    return dict(sorted(_REGISTRY.items()))


# ---- problem sources: "<prefix>:..." names whose problems another package makes ---------------------------


@dataclass(frozen=True)
class ProblemSource:
    """Problems named ``<prefix>:<rest>``, made by a package above the data layer (the testbed's tasks)."""

    prefix: str
    load: Callable[[str, str | None], list[Any]]
    """(the whole name, the split or None) -> problems; raises ``DataError`` naming what is wrong."""
    description: str = ""


_SOURCES: dict[str, ProblemSource] = {}

SOURCE_PROVIDERS: dict[str, str] = {"testbed": "conspo.testbed.problem_sets"}
"""The module that registers each built-in prefix's source when imported. The data layer imports it by name
the first time such a name is loaded (as a packaging entry point would): it holds none of that code and
imports nothing above it at import time."""


def register_source(
    prefix: str,
    load: Callable[[str, str | None], list[Any]],
    description: str = "",
    *,
    overwrite: bool = False,
) -> ProblemSource:
    """Serve ``load_problems("<prefix>:...")`` with ``load`` (refuses a taken prefix unless ``overwrite``)."""
    if not prefix or ":" in prefix:
        raise ValueError(f"a source prefix is a non-empty name without ':', got {prefix!r}")
    if prefix in _SOURCES and not overwrite and _SOURCES[prefix].load is not load:
        raise ValueError(f"problem source {prefix!r} is already registered")
    _SOURCES[prefix] = ProblemSource(prefix, load, description)
    return _SOURCES[prefix]


def get_source(prefix: str) -> ProblemSource | None:
    """The source registered for ``prefix`` (importing its built-in provider on first use), or None."""
    if prefix not in _SOURCES and prefix in SOURCE_PROVIDERS:
        importlib.import_module(SOURCE_PROVIDERS[prefix])
    return _SOURCES.get(prefix)


def list_sources() -> dict[str, ProblemSource]:
    """Every source registered so far, by prefix (built-in providers not yet used are not imported)."""
    return dict(sorted(_SOURCES.items()))


_QA = {"problem": "question", "answer": "answer"}
for _spec in (
    # Training sets (paper §5.1: DeepScaleR-Preview for R1-distilled models; DAPO-Math-17k and MATH level 3-5).
    DatasetSpec(
        "deepscaler",
        "DeepScaleR-Preview-Dataset, 40.3k problems (AIME 1983-2023, AMC, Omni-MATH, STILL, MATH)",
        "train",
        {"train": "deepscaler.jsonl"},
        hub_id="agentica-org/DeepScaleR-Preview-Dataset",
        columns={"problem": "problem", "answer": "answer"},
    ),
    DatasetSpec(
        "dapo_math_17k",
        "DAPO-Math-17k (deduplicated English copy by open-r1)",
        "train",
        {"train": "dapo_math_17k.jsonl"},
        hub_id="open-r1/DAPO-Math-17k-Processed",
        hub_config="en",
        columns={"problem": "prompt", "answer": "solution"},
    ),
    DatasetSpec(
        "math_level3to5",
        "MATH train split, levels 3-5 (5,559 problems; no overlap with MATH-500)",
        "train",
        {"train": "math_train_level3to5.jsonl"},
        # No single hub copy holds exactly this subset; the local file is the reference.
    ),
    DatasetSpec(
        "aime_1983_2023",
        "AIME 1983-2023, the AIME part of DeepScaleR (3 problems are also in MATH-500)",
        "train",
        {"train": "aime_1983_2023_train.jsonl"},
    ),
    DatasetSpec(
        "gsm8k",
        "GSM8K grade-school word problems",
        "benchmark",
        {"test": "gsm8k_test.jsonl", "train": "gsm8k_train.jsonl"},
        hub_id="openai/gsm8k",
        hub_config="main",
        columns=_QA,
        answer_transform="gsm8k_hash",
    ),
    # Benchmarks (paper Tables 1-5).
    DatasetSpec(
        "math500",
        "MATH-500 (the PRM800K test subset of MATH)",
        "benchmark",
        {"test": "math500.jsonl"},
        hub_id="HuggingFaceH4/MATH-500",
        columns={"problem": "problem", "answer": "answer", "id": "unique_id"},
    ),
    DatasetSpec(
        "aime24",
        "AIME 2024 (I and II), 30 problems",
        "benchmark",
        {"test": "aime24.jsonl"},
        hub_id="HuggingFaceH4/aime_2024",
        hub_splits={"test": "train"},
        columns={"problem": "problem", "answer": "answer", "id": "id"},
        answer_transform="number_to_str",
    ),
    DatasetSpec(
        "aime25",
        "AIME 2025 (I and II), 30 problems",
        "benchmark",
        {"test": "aime25.jsonl"},
        hub_id="MathArena/aime_2025",
        hub_splits={"test": "train"},
        columns={"problem": "problem", "answer": "answer", "id": "problem_idx"},
        answer_transform="number_to_str",
    ),
    DatasetSpec(
        "hmmt_feb25",
        "HMMT February 2025, 30 problems",
        "benchmark",
        {"test": "hmmt_feb25.jsonl"},
        hub_id="MathArena/hmmt_feb_2025",
        hub_splits={"test": "train"},
        columns={"problem": "problem", "answer": "answer", "id": "problem_idx"},
        answer_transform="number_to_str",
    ),
    DatasetSpec(
        "amc23",
        "AMC 2023 (numeric reformulation), 40 problems",
        "benchmark",
        {"test": "amc23.jsonl"},
        hub_id="math-ai/amc23",
        columns=_QA,
        answer_transform="number_to_str",
    ),
    DatasetSpec(
        "minerva",
        "Minerva Math (MIT OCW STEM problems), 272 problems",
        "benchmark",
        {"test": "minerva_math.jsonl"},
        hub_id="math-ai/minervamath",
        columns=_QA,
    ),
    DatasetSpec(
        "olympiadbench",
        "OlympiadBench, English text-only competition maths, open-ended (675 problems)",
        "benchmark",
        {"test": "olympiadbench.jsonl"},
        hub_id="Hothan/OlympiadBench",
        hub_config="OE_TO_maths_en_COMP",
        hub_splits={"test": "train"},
        columns={"problem": "question", "answer": "final_answer", "id": "id"},
        answer_transform="first_of_list",
    ),
):
    register_dataset(_spec)
