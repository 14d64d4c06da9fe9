"""Chat templates: a conversation rendered into the prompt text the model was trained on.

Templates are Jinja2 programs shipped with models (GGUF `tokenizer.chat_template`, Hugging Face
`tokenizer_config.json` / `chat_template.jinja`). They render here exactly as transformers'
`apply_chat_template(..., tokenize=False)` renders them: the same sandboxed environment
(`trim_blocks`, `lstrip_blocks`, loop controls), the same helpers (`raise_exception`, `tojson`,
`strftime_now`, `dict`, `namespace`) and the same variables (`messages`, `tools`, `documents`,
`add_generation_prompt`, `bos_token`, `eos_token`). Templates are untrusted code, hence the sandbox.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Used when a model ships no template: ChatML, which SmolLM2, Qwen and many others use.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ChatTemplateError(ValueError):
    """The conversation cannot be rendered; `field` names the offending input (e.g. "messages[1].content")."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _RaisedByTemplate(jinja2.exceptions.TemplateError):
    """The template called raise_exception(message): it refuses this conversation."""


class ChatTemplate:
    """A compiled chat template; `source=None` means ChatML."""

    def __init__(self, source: str | None, bos_token: str | None = "", eos_token: str | None = ""):
        if source is not None and not isinstance(source, str):
            raise ChatTemplateError("chat_template", "must be a string")
        self.source = CHATML_TEMPLATE if source is None else source
        self.bos_token = bos_token or ""
        self.eos_token = eos_token or ""
        try:
            self._template = _compile(self.source)
        except jinja2.exceptions.TemplateSyntaxError as e:
            raise ChatTemplateError("chat_template", f"invalid Jinja template (line {e.lineno}): {e.message}") from e

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **extra: Any) -> str:
        """The prompt text for `messages` (each with string `role` and `content`; other keys are passed
        to the template). `add_generation_prompt` appends the header that opens the assistant's turn;
        `extra` are further template variables (e.g. `tools`), overriding the special tokens."""
        chat = validate_messages(messages)
        context: dict[str, Any] = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "tools": None,
            "documents": None,
            **_plain(extra),
            "messages": chat,
            "add_generation_prompt": bool(add_generation_prompt),
        }
        try:
            return self._template.render(**context)
        except _RaisedByTemplate as e:
            raise ChatTemplateError("messages", str(e.message)) from e
        except jinja2.exceptions.TemplateError as e:
            # e.g. an undefined attribute used in an expression: the template cannot handle these messages
            raise ChatTemplateError("messages", f"the chat template failed: {e}") from e


def validate_messages(messages: Any) -> list[dict[str, Any]]:
    """A plain copy of `messages` after checking its shape; keys whose value is None are dropped (as
    transformers does, since templates handle a missing key better than a None one)."""
    if not isinstance(messages, (list, tuple)) or isinstance(messages, str):
        raise ChatTemplateError("messages", "must be a list of message objects")
    if not messages:
        raise ChatTemplateError("messages", "must not be empty")
    chat = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise ChatTemplateError(where, "must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise ChatTemplateError(f"{where}.role", "must be a non-empty string")
        if not isinstance(content, str):
            raise ChatTemplateError(f"{where}.content", "must be a string")
        for key in message:
            if not isinstance(key, str):
                raise ChatTemplateError(where, "keys must be strings")
        chat.append({k: _plain(v) for k, v in message.items() if v is not None})
    return chat


def _plain(value: Any) -> Any:
    """`value` rebuilt from plain JSON types, so the sandbox never sees an object with methods of its
    own; anything else becomes an inert "<TypeName>" placeholder (as in transformers)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


def _raise_exception(message: Any) -> None:
    raise _RaisedByTemplate(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | str | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # unlike Jinja's own tojson, no HTML escaping, and json.dumps' options are exposed
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    """`dict(...)` for templates, without giving them the dict type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """Jinja's `namespace()`, refusing underscore-prefixed names (a way into interpreter internals)."""

    def __init__(*args: Any, **kwargs: Any):  # noqa: N805 -- Jinja's signature trick, so namespace(self=...) works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot store underscore-prefixed attributes on a namespace, got {name!r}"
            )


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training masks in transformers;
    rendering only needs its body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body).set_lineno(lineno)


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env.from_string(source)
