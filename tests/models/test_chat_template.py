"""Chat templates render exactly as transformers' apply_chat_template(..., tokenize=False)."""
from __future__ import annotations

import jinja2
import pytest

from models.chat_template import CHATML_TEMPLATE, ChatTemplate, ChatTemplateError
from tests.models._tok_fixtures import our_tokenizer, reference_tokenizer

# Llama-3 style: BOS written by the template, the system message pulled out, `loop.first`, and
# indented block tags that only render cleanly with trim_blocks and lstrip_blocks
LLAMA3_STYLE = """{% set loop_messages = messages %}
{% if messages[0]['role'] == 'system' %}
    {% set system_message = messages[0]['content'] | trim %}
    {% set loop_messages = messages[1:] %}
{% else %}
    {% set system_message = "You are a helpful assistant." %}
{% endif %}
{% for message in loop_messages %}
    {% if loop.first %}
        {{- bos_token + '<|start_header_id|>system<|end_header_id|>\\n\\n' + system_message + '<|eot_id|>' }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'
        + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{% if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# Mistral style: refuses conversations that do not alternate user/assistant
ALTERNATING = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

# Tool-calling style: tools and messages written as JSON with tojson's options
TOJSON = """{%- if tools %}
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
{%- endif %}
{%- for message in messages %}
<{{ message.role }}>{{ message | tojson(indent=2, sort_keys=True) }}
{{ message.content | tojson(ensure_ascii=True) }} {{ {"a": 1, "b": [1, 2]} | tojson(separators=(",", ":")) }}
{%- if message.tool_calls is defined %} calls={{ message.tool_calls | length }}{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}
<assistant>
{%- endif %}"""

# namespace, loop controls, dict() and strftime_now
HELPERS = """{%- set ns = namespace(count=0) %}
{%- for message in messages %}
{%- if message.role == 'system' %}{% continue %}{% endif %}
{%- set ns.count = ns.count + 1 %}
{{ ns.count }}. {{ message.role }}: {{ message.content }}
{%- if ns.count >= 2 %}{% break %}{% endif %}
{%- endfor %}
{{ dict(a=1)['a'] }} {{ dict.fromkeys(['x'], 2)['x'] }} {{ strftime_now('%Y') }}
"""

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Wetter für einen Ort",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}}]

USER_ONLY = [{"role": "user", "content": "What is the capital of France?"}]
WITH_SYSTEM = [{"role": "system", "content": "  You answer briefly.  "}, *USER_ONLY]
MULTI_TURN = [
    {"role": "user", "content": "Hi! 👋 日本語で?"},
    {"role": "assistant", "content": "こんにちは <b>&amp;</b> \"quoted\"\n\n  indented"},
    {"role": "user", "content": "Thanks.\tBye"},
]
CONVERSATIONS = {"user_only": USER_ONLY, "with_system": WITH_SYSTEM, "multi_turn": MULTI_TURN,
                 "system_multi_turn": [WITH_SYSTEM[0], *MULTI_TURN]}


@pytest.fixture(scope="module")
def ref():
    return reference_tokenizer()


def _ours(template: str | None, ref) -> ChatTemplate:
    return ChatTemplate(template, bos_token=ref.bos_token, eos_token=ref.eos_token)


def _theirs(ref, template: str, messages, **kwargs) -> str:
    return ref.apply_chat_template(messages, chat_template=template, tokenize=False, **kwargs)


@pytest.mark.parametrize("generation_prompt", [True, False])
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_gguf_template_renders_as_transformers(ref, name, generation_prompt):
    template = our_tokenizer().chat_template
    messages = CONVERSATIONS[name]
    assert _ours(template, ref).render(messages, add_generation_prompt=generation_prompt) == _theirs(
        ref, template, messages, add_generation_prompt=generation_prompt)


def test_gguf_template_adds_default_system_message_only_without_one(ref):
    ct = _ours(our_tokenizer().chat_template, ref)
    assert ct.render(USER_ONLY).startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert ct.render(WITH_SYSTEM).startswith("<|im_start|>system\n  You answer briefly.  <|im_end|>\n")
    assert ct.render(USER_ONLY).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("generation_prompt", [True, False])
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("template", [LLAMA3_STYLE, HELPERS], ids=["llama3", "helpers"])
def test_real_world_templates_render_as_transformers(ref, template, name, generation_prompt):
    messages = CONVERSATIONS[name]
    assert _ours(template, ref).render(messages, add_generation_prompt=generation_prompt) == _theirs(
        ref, template, messages, add_generation_prompt=generation_prompt)


def test_llama3_style_template_writes_bos_once_at_the_start(ref):
    out = _ours(LLAMA3_STYLE, ref).render(MULTI_TURN)
    assert out.startswith("<|im_start|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.")
    assert out.count("<|im_start|>") == 1
    assert out.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.mark.parametrize("generation_prompt", [True, False])
@pytest.mark.parametrize("tools", [None, TOOLS], ids=["no_tools", "tools"])
def test_tojson_template_renders_as_transformers(ref, tools, generation_prompt):
    messages = [*MULTI_TURN, {"role": "assistant", "content": "calling", "tool_calls": [{"name": "get_weather"}]},
                {"role": "user", "content": "ok", "tool_calls": None}]
    ours = _ours(TOJSON, ref).render(messages, add_generation_prompt=generation_prompt, tools=tools)
    assert ours == _theirs(ref, TOJSON, messages, add_generation_prompt=generation_prompt, tools=tools)
    # tojson: ensure_ascii off by default, on when asked
    assert '"content": "Hi! 👋 日本語で?"' in ours and '"Hi! \\ud83d\\udc4b \\u65e5' in ours


def test_alternating_template_renders_as_transformers(ref):
    messages = MULTI_TURN
    for generation_prompt in (True, False):
        assert _ours(ALTERNATING, ref).render(messages, add_generation_prompt=generation_prompt) == _theirs(
            ref, ALTERNATING, messages, add_generation_prompt=generation_prompt)


def test_raise_exception_in_template_is_a_chat_template_error_with_its_message(ref):
    messages = [USER_ONLY[0], USER_ONLY[0]]
    with pytest.raises(ChatTemplateError) as err:
        _ours(ALTERNATING, ref).render(messages)
    assert err.value.field == "messages"
    assert err.value.message == "Conversation roles must alternate user/assistant/user/assistant/..."
    with pytest.raises(jinja2.TemplateError, match="^Conversation roles must alternate"):
        _theirs(ref, ALTERNATING, messages)


def test_chatml_fallback_without_a_template():
    ct = ChatTemplate(None)
    assert ct.source == CHATML_TEMPLATE
    assert ct.render(WITH_SYSTEM) == (
        "<|im_start|>system\n  You answer briefly.  <|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert ct.render(USER_ONLY, add_generation_prompt=False) == (
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n")


@pytest.mark.parametrize("messages, field", [
    ("hello", "messages"),
    ({"role": "user", "content": "hi"}, "messages"),
    ([], "messages"),
    (["hi"], "messages[0]"),
    ([{"content": "hi"}], "messages[0].role"),
    ([{"role": "", "content": "hi"}], "messages[0].role"),
    ([{"role": 3, "content": "hi"}], "messages[0].role"),
    ([USER_ONLY[0], {"role": "assistant"}], "messages[1].content"),
    ([USER_ONLY[0], {"role": "assistant", "content": None}], "messages[1].content"),
    ([USER_ONLY[0], {"role": "user", "content": [{"type": "text", "text": "hi"}]}], "messages[1].content"),
])
def test_bad_messages_are_refused_with_the_field(messages, field):
    with pytest.raises(ChatTemplateError) as err:
        ChatTemplate(None).render(messages)
    assert err.value.field == field
    assert isinstance(err.value, ValueError)


def test_invalid_template_is_refused_when_compiled():
    with pytest.raises(ChatTemplateError) as err:
        ChatTemplate("{% for m in messages %}{{ m.content }}")
    assert err.value.field == "chat_template"


def test_template_cannot_modify_the_callers_messages():
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{% set _ = messages.append(1) %}{{ messages | length }}").render(messages)
    assert messages == [{"role": "user", "content": "hi"}]


def test_namespace_refuses_underscore_names():
    with pytest.raises(ChatTemplateError, match="underscore"):
        ChatTemplate("{% set ns = namespace(__class__=1) %}x").render(USER_ONLY)


def test_generation_tags_render_their_body():
    template = "{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}"
    assert ChatTemplate(template).render(MULTI_TURN[:1]) == "[Hi! 👋 日本語で?]"


def test_extra_variables_reach_the_template():
    template = "{{ bos_token }}{% if enable_thinking %}think{% else %}no{% endif %}"
    assert ChatTemplate(template, bos_token="<s>").render(USER_ONLY, enable_thinking=True) == "<s>think"
    assert ChatTemplate(template, bos_token="<s>").render(USER_ONLY) == "<s>no"
