"""Prompt templates: the paper's "solve step by step, answer in \\boxed{}" prompt and its variants.

A template is the text of the user turn with a ``{problem}`` placeholder. ``render_prompt`` puts it through the
tokenizer's chat template when the tokenizer has one (``add_generation_prompt=True``), otherwise returns it as
plain text. The same template is used for rollouts and evaluation, for every objective (paper, App. E).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PLACEHOLDER",
    "PromptTemplate",
    "get_template",
    "list_templates",
    "load_template_file",
    "register_template",
    "render_prompt",
]

PLACEHOLDER = "{problem}"


@dataclass(frozen=True)
class PromptTemplate:
    """A named prompt: ``user`` holds ``{problem}``; ``response_prefix`` is appended after the generation prompt."""

    name: str
    user: str
    description: str = ""
    response_prefix: str = ""

    def __post_init__(self) -> None:
        if PLACEHOLDER not in self.user:
            raise ValueError(f"prompt template {self.name!r} has no {PLACEHOLDER} placeholder: {self.user!r}")

    def content(self, problem_text: str) -> str:
        # str.replace, not str.format: templates contain literal braces (\boxed{}).
        return self.user.replace(PLACEHOLDER, problem_text)


# INFERRED wording: the paper shows the template only as a figure (App. E, Fig. 4: "solve step by step, final
# answer in \boxed{}"); this is the DeepScaleR / DisCO sentence, the training set and code base it builds on.
_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."

_TEMPLATES: dict[str, PromptTemplate] = {}


def register_template(template: PromptTemplate, *, overwrite: bool = False) -> PromptTemplate:
    """Add a template to the registry under ``template.name`` (refuses a taken name unless ``overwrite``)."""
    if template.name in _TEMPLATES and not overwrite:
        raise ValueError(f"prompt template {template.name!r} is already registered")
    _TEMPLATES[template.name] = template
    return template


register_template(
    PromptTemplate(
        "default", f"{PLACEHOLDER} {_INSTRUCTION}", "the paper's template: step by step, \\boxed{} answer"
    )
)
register_template(
    PromptTemplate(
        "think",
        f"{PLACEHOLDER} {_INSTRUCTION}",
        "R1-distilled models: the default template, response opened with <think>",
        response_prefix="<think>\n",
    )
)
register_template(PromptTemplate("testbed", PLACEHOLDER, "the CPU testbed: the bare problem (e.g. 37+85)"))


def list_templates() -> dict[str, str]:
    """Registered template names and their one-line descriptions."""
    return {name: t.description for name, t in sorted(_TEMPLATES.items())}


def load_template_file(path: str | Path, name: str | None = None) -> PromptTemplate:
    """Read a user template (UTF-8 text containing ``{problem}``) from a file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read prompt template file {path}: {exc}") from None
    if PLACEHOLDER not in text:
        raise ValueError(f"prompt template file {path} has no {PLACEHOLDER} placeholder")
    return PromptTemplate(name or path.stem, text.rstrip("\n"), f"from {path}")


def get_template(template: str | Path | PromptTemplate) -> PromptTemplate:
    """Resolve a registered name, a path to a template file, or a ``PromptTemplate``."""
    if isinstance(template, PromptTemplate):
        return template
    if isinstance(template, str) and template in _TEMPLATES:
        return _TEMPLATES[template]
    if Path(template).is_file():
        return load_template_file(template)
    raise ValueError(
        f"unknown prompt template {str(template)!r}: not a registered name ({', '.join(sorted(_TEMPLATES))}) "
        "and not a file"
    )


def render_prompt(
    problem_text: str, tokenizer: Any | None = None, template: str | Path | PromptTemplate = "default"
) -> str:
    """The prompt string for one problem, through the tokenizer's chat template when it has one.

    >>> render_prompt("What is 1+1?")
    "What is 1+1? Let's think step by step and output the final answer within \\\\boxed{}."
    """
    tpl = get_template(template)
    content = tpl.content(problem_text)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        # Some R1-distilled chat templates already open the <think> block; never open it twice.
        if tpl.response_prefix and not prompt.endswith(tpl.response_prefix):
            prompt += tpl.response_prefix
        return prompt
    return content + (("\n" + tpl.response_prefix) if tpl.response_prefix else "")
