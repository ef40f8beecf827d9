"""Problems, datasets and prompt templates (``Problem``, ``load_problems``, ``render_prompt``)."""

from __future__ import annotations

from conspo.data.problem import Problem
from conspo.data.templates import (
    PromptTemplate,
    get_template,
    list_templates,
    register_template,
    render_prompt,
)

__all__ = [
    "Problem",
    "PromptTemplate",
    "get_template",
    "list_templates",
    "register_template",
    "render_prompt",
]
