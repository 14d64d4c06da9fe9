"""A request's prompt as token ids: the one function the engine runs and the API counts prompt tokens with.

Torch-free: the API process loads a model's tokenizer and chat template (never its weights) to refuse at
submit a prompt that cannot fit, and it must count exactly the tokens the worker's engine will see.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol


class PromptError(ValueError):
    """The prompt cannot be made into token ids; `field` names the offending input ("prompt", "messages[1]")."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Encoder(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


class Template(Protocol):
    def render(self, messages: Sequence[Any], add_generation_prompt: bool = ...) -> str: ...


def load_tokenizer(source: str | Path) -> tuple[Any, Any]:
    """The model's tokenizer and chat template (None when the model has none), from a .gguf file or a
    Hugging Face directory."""
    from models.chat_template import ChatTemplate
    from models.tokenizer import Tokenizer

    path = Path(source)
    if path.is_dir():
        tokenizer = Tokenizer.from_hf_dir(path)
    else:
        from models.gguf import GGUFFile

        tokenizer = Tokenizer.from_gguf(GGUFFile(path))
    template = None
    if tokenizer.chat_template:
        template = ChatTemplate(tokenizer.chat_template, bos_token=tokenizer.bos_token or "",
                                eos_token=tokenizer.eos_token or "")
    return tokenizer, template


def prompt_ids(tokenizer: Encoder, template: Template | None, prompt: Any = None, messages: Any = None) -> list[int]:
    """The prompt's token ids: chat `messages` rendered with the model's template (the template writes any BOS),
    or the raw `prompt` (with BOS where the model wants one). Raises PromptError naming the field."""
    from models.chat_template import ChatTemplateError

    if messages is not None:
        if template is None:
            raise PromptError("messages", "this model has no chat template: send a prompt instead of messages")
        try:
            text = template.render(messages, add_generation_prompt=True)
        except ChatTemplateError as e:
            raise PromptError(e.field, e.message) from None
        ids = tokenizer.encode(text, add_special_tokens=False)
    elif isinstance(prompt, str):
        ids = tokenizer.encode(prompt, add_special_tokens=True)
    else:
        raise PromptError("prompt", "a request needs a prompt (a string) or messages")
    if not ids:
        raise PromptError("messages" if messages is not None else "prompt", "the prompt is empty (no tokens)")
    return list(ids)
