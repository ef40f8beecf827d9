"""Problems, datasets and prompt templates.

>>> from conspo.data import load_problems, render_prompt
>>> problems = load_problems("testbed:add", split="eval", limit=2)
>>> problems[0].answer == str(eval(problems[0].problem))
True
"""

from __future__ import annotations

from conspo.data.loading import (
    DataError,
    DataValidationError,
    LoadReport,
    NotLocalError,
    RowIssue,
    load_problems,
    read_problems,
)
from conspo.data.overlap import Overlap, check_overlap, normalize_problem_text
from conspo.data.problem import Problem
from conspo.data.registry import (
    DatasetSpec,
    ProblemSource,
    get_dataset_spec,
    get_source,
    list_datasets,
    list_sources,
    register_dataset,
    register_source,
)
from conspo.data.templates import (
    PromptTemplate,
    get_template,
    list_templates,
    load_template_file,
    register_template,
    render_prompt,
)

__all__ = [
    "DataError",
    "DataValidationError",
    "DatasetSpec",
    "LoadReport",
    "NotLocalError",
    "Overlap",
    "Problem",
    "ProblemSource",
    "PromptTemplate",
    "RowIssue",
    "check_overlap",
    "get_dataset_spec",
    "get_source",
    "get_template",
    "list_datasets",
    "list_sources",
    "list_templates",
    "load_problems",
    "load_template_file",
    "normalize_problem_text",
    "read_problems",
    "register_dataset",
    "register_source",
    "register_template",
    "render_prompt",
]
