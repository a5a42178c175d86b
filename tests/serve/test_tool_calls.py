"""Tool calls in the OpenAI-compatible API: the parser per model family, and round trips with the ``openai`` client.

Random tiny weights never write a tool call, so the round trips serve a scripted engine: a test
double of :class:`~oikyo.serve.engine.core.GenerationEngine` that answers each request with the
next scripted text, streamed token by token through real engine handles. Everything else is real:
the bundled tokenizer and chat template, the replica app, the router, the tool-call parser, the
stream relay and the official client's stream assembly. Forced calls (tool_choice "required" or a
named function) run real engines over tiny random models, one per family's chat template and tokens.
"""

from __future__ import annotations

import json
import threading

import pytest
from serving_fixtures import *  # noqa: F401,F403  (the replica fixture)
from serving_fixtures import BASE_ID, ROUTER_TOKEN, ThreadServer, random_model_dir

from oikyo.serve.gateway import openai_api as oa
from oikyo.serve.gateway.tool_calls import ToolCallParser, answer_text, detect_format

NAMES = frozenset({"get_weather", "get_time"})
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
PARIS = '{"city": "Paris"}'
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


def _events(parser: ToolCallParser, text: str, piece: int) -> tuple[str | None, list]:
    """(content, [(name, arguments)]) from streaming ``text`` in pieces of ``piece`` characters."""
    stream = parser.stream()
    events = []
    for i in range(0, len(text), piece):
        events += stream.feed(text[i : i + piece])
    events += stream.finish()
    content = "".join(value for kind, value in events if kind == "content")
    calls = [value for kind, value in events if kind == "call"]
    return (content or None) if calls else content, calls


def _named(calls) -> list[tuple[str, str]]:
    return [(c["function"]["name"], c["function"]["arguments"]) for c in calls]


# ----------------------------------------------------------------------------- detecting the format

# Excerpts of the families' own chat templates (the lines that teach the call format).
QWEN25 = ('For each function call, return a json object with function name and arguments within <tool_call></tool_call> '
          'XML tags:\\n<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call>')
LLAMA32 = ('Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
           'Do not use variables.')
LLAMA31 = "{%- if builtin_tools is defined or tool_call.name == 'code_interpreter' %}{{- '<|python_tag|>' }}"
MISTRAL = "{{- '[TOOL_CALLS] [' }}{%- for tool in message.tool_calls %}"


@pytest.mark.parametrize("template, expected", [(QWEN25, "hermes"), (LLAMA32, "llama3"), (LLAMA31, "llama3"),
                                                (MISTRAL, "mistral"), ("{{ messages }}", "json"), (None, "json")])
def test_the_format_is_read_from_the_template(template, expected):
    assert detect_format(template) == expected


def test_the_bundled_template_gets_the_default_the_prompt_asks_for(bundled_tokenizer):
    from oikyo.models.chat_template import render_prompt, template_source

    assert detect_format(template_source(bundled_tokenizer)) == "json"
    prompt = render_prompt(bundled_tokenizer, [{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER])
    assert 'reply with only a JSON object {"name": <tool name>, "arguments":' in prompt
    assert '"name": "get_weather"' in prompt


# A Hermes-style template written for this test: tools in a system turn, calls as <tool_call> blocks.
HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>\n"
    "Call a tool with <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ 'user' if m.role == 'tool' else m.role }}\n"
    "{% if m.role == 'tool' %}<tool_response>{{ m.content }}</tool_response>{% else %}{{ m.content }}{% endif %}"
    "{% for c in m.tool_calls or [] %}<tool_call>\n{\"name\": \"{{ c.function.name }}\", "
    "\"arguments\": {{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_template_with_a_call_format_trains_and_serves_calls_in_it(bundled_tokenizer_dir):
    """History calls render the template's own way (what the model learns), and the answer parser reads that way."""
    from oikyo.models.chat_template import IGNORE_INDEX, encode_conversation, template_source
    from oikyo.models.loading import load_tokenizer

    tokenizer = load_tokenizer(bundled_tokenizer_dir)
    tokenizer.chat_template = HERMES_TEMPLATE
    turns = oa.canonical_messages(QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": PARIS}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."}])
    encoded = encode_conversation(tokenizer, turns, tools=[WEATHER])
    trained = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX]
    call_text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert tokenizer.decode(trained) == call_text + "<|im_end|>Sunny.<|im_end|>"
    assert "<|im_start|>user\n<tool_response>sunny</tool_response>" in tokenizer.decode(encoded.input_ids)
    parser = ToolCallParser.for_template(template_source(tokenizer), [WEATHER])
    assert parser.format == "hermes" and _named(parser.parse(call_text)[1]) == [("get_weather", PARIS)]


# ----------------------------------------------------------------------------- parsing

CALLS = {  # format -> (answer, content, calls)
    "json": ('{"name": "get_weather", "arguments": {"city": "Paris"}}', None, [("get_weather", PARIS)]),
    "hermes": ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
               '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
               "Let me check.", [("get_weather", PARIS), ("get_time", "{}")]),
    "llama3": ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}', None,
               [("get_weather", PARIS)]),
    "mistral": ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
                '{"name": "get_time", "arguments": {}}]', None, [("get_weather", PARIS), ("get_time", "{}")]),
}


@pytest.mark.parametrize("fmt", sorted(CALLS))
def test_each_family_format_parses_whole_and_streamed(fmt):
    answer, content, calls = CALLS[fmt]
    parser = ToolCallParser(fmt, NAMES)
    got_content, got = parser.parse(answer)
    assert (got_content, _named(got)) == (content, calls)
    assert all(c["id"].startswith("call_") and len(c["id"]) > 10 and c["type"] == "function" for c in got)
    assert len({c["id"] for c in got}) == len(got)
    for piece in (1, 3, 1000):
        streamed_content, streamed = _events(parser, answer, piece)
        assert (streamed_content, _named(streamed)) == (content, calls)


@pytest.mark.parametrize("answer", [
    '{"name": "get_weather", "arguments": {"city": "Paris"}} The weather is fetched.',
    'Sure: {"name": "get_weather", "parameters": {"city": "Paris"}}',  # fine-tuned by oikyo: bare JSON, any key
    '```\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',  # arguments as JSON text
])
def test_bare_json_calls_parse_in_every_format(answer):
    for fmt in ("json", "hermes", "llama3", "mistral"):
        content, calls = ToolCallParser(fmt, NAMES).parse(answer)
        assert _named(calls) == [("get_weather", PARIS)]
        assert content and "get_weather" not in content


@pytest.mark.parametrize("fmt, answer", [
    ("json", '{"name": "delete_everything", "arguments": {}}'),  # a tool that was not offered
    ("json", '{"name": "get_weather", "arguments": "city=Paris"}'),  # arguments not JSON
    ("json", '{"name": "get_weather", "arguments": [1, 2]}'),  # arguments not an object
    ("json", '{"name": "get_weather", "arguments": {}, "extra": 1}'),
    ("json", '{"name": "get_weather", "arguments": {"city": "Par'),  # cut off
    ("json", '[{"name": "get_weather", "arguments": {}}, {"name": "nope", "arguments": {}}]'),  # one bad: all text
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": {"city": }</tool_call> and more'),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arg'),
    ("mistral", "[TOOL_CALLS] [1, 2]"),
    ("json", 'Plain text with {braces}, [brackets] and <tags>, {"name": "x"} and a trailing <'),
    ("json", "  leading and trailing whitespace is kept  \n"),
])
def test_anything_but_a_valid_call_stays_text(fmt, answer):
    parser = ToolCallParser(fmt, NAMES)
    assert parser.parse(answer) == (answer, [])
    for piece in (1, 4):
        assert _events(parser, answer, piece) == (answer, [])


def test_text_is_released_as_soon_as_it_cannot_open_a_call():
    stream = ToolCallParser("hermes", NAMES).stream()
    assert stream.feed("The answer") == [("content", "The answer")]
    assert stream.feed(" is <") == [("content", " is")]  # "<" may open <tool_call>; the space waits with it
    assert stream.feed("b>") == [("content", " <b>")]
    assert stream.feed(' {"na') == []  # may be a call: held
    assert stream.feed('me": 3}') == [("content", ' {"name": 3}')]
    assert stream.feed("<tool_call>") == []
    [(kind, call)] = stream.feed('{"name": "get_time", "arguments": {}}</tool_call>')
    assert kind == "call" and call["function"] == {"name": "get_time", "arguments": "{}"}
    assert stream.finish() == []


def test_every_prefix_of_a_call_is_held_and_broken_json_is_released_before_the_end():
    tricky = {"s": 'a\\b"c\n\u00e9\U0001F600', "x": -1.5e-3, "t": True, "f": False, "n": None, "l": [1, [2, {"k": []}]]}
    texts = [json.dumps({"name": "get_time", "arguments": tricky}),  # escapes, \uXXXX and a surrogate pair
             json.dumps([{"name": "get_time", "arguments": tricky}], ensure_ascii=False, indent=2)]
    for text in texts:
        for cut in range(1, len(text)):
            assert ToolCallParser("json", NAMES).stream().feed(text[:cut]) == [], text[:cut]
        assert [kind for kind, _ in _events_list(ToolCallParser("json", NAMES), text)] == ["call"]
    stream = ToolCallParser("json", NAMES).stream()
    assert stream.feed('{"name": "get_time", oops') == [("content", '{"name": "get_time", oops')]


def _events_list(parser, text):
    stream = parser.stream()
    return stream.feed(text) + stream.finish()


def test_parallel_tool_calls_false_keeps_later_calls_as_text():
    answer = '{"name": "get_time", "arguments": {}}\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
    content, calls = ToolCallParser("json", NAMES, max_calls=1).parse(answer)
    assert _named(calls) == [("get_time", "{}")]
    assert content == '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def test_answer_text_writes_calls_as_canonical_json_lines():
    _, calls = ToolCallParser("json", NAMES).parse('{"name": "get_weather", "arguments": {"city": "Paris"}}')
    assert answer_text("Checking.", calls) == 'Checking.\n{"name": "get_weather", "arguments": {"city": "Paris"}}'


# ----------------------------------------------------------------------------- request validation


def _chat(**fields):
    return oa.parse(oa.ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields})


@pytest.mark.parametrize("fields, param", [
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),  # no tools to call
    ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}],
      "tool_choice": "required"}, "tools"),
])
def test_tool_choice_mistakes_are_400s(fields, param):
    with pytest.raises(oa.ApiError) as error:
        _chat(**fields)
    assert error.value.status == 400 and error.value.param == param


def test_a_tool_without_a_function_name_is_refused():
    with pytest.raises(oa.ApiError) as error:
        _chat(tools=[{"type": "function", "function": {"description": "no name"}}])
    assert error.value.status == 400 and error.value.param == "tools[0]"


CITY = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"],
    "additionalProperties": False}}}
NO_ARGS = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {}, "additionalProperties": False}}}


@pytest.mark.parametrize("stream", [False, True])
def test_required_and_named_tool_choice_force_a_call_from_random_weights(replica, stream):
    """Random tiny weights never call a tool by themselves; constrained decoding makes them."""
    client = replica.client()
    for names, answer in _forced_answers(client, BASE_ID, stream):
        [call] = answer.choices[0].message.tool_calls
        assert call.function.name in names and answer.choices[0].finish_reason == "tool_calls"
        arguments = json.loads(call.function.arguments)
        allowed = [{"city": "Paris"}, {"city": "Rome"}] if call.function.name == "get_weather" else [{}]
        assert arguments in allowed
    plain = client.chat.completions.create(model=BASE_ID, messages=QUESTION, tools=[CITY, NO_ARGS], max_tokens=48,
                                           temperature=0)  # "auto": the same weights write no call
    assert not plain.choices[0].message.tool_calls


def _forced_answers(client, model: str, stream: bool):
    """(the tool names allowed, the answer) for a named tool_choice, then for "required", streamed or not."""
    params = {"model": model, "messages": QUESTION, "tools": [CITY, NO_ARGS], "max_tokens": 48, "temperature": 0}
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice, names in ((named, {"get_weather"}), ("required", {"get_weather", "get_time"})):
        if stream:
            with client.chat.completions.stream(**params, tool_choice=choice) as events:
                yield names, events.get_final_completion()
        else:
            yield names, client.chat.completions.create(**params, tool_choice=choice)


# Each family's chat template (minimal, but teaching its call format as the real ones do) and the tokens
# its tokenizer adds: Qwen's <tool_call> tags are added tokens that are not special (they stay in the
# text), Mistral's [TOOL_CALLS] and Llama's <|python_tag|> are special (the detokenizer drops them).
LLAMA_TEMPLATE = (
    "{%- if tools %}<|start_header_id|>system<|end_header_id|>\n\nGiven the following functions, respond with a JSON "
    "for a function call. " + LLAMA32 + "\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|eot_id|>{% endif %}"
    "{%- for m in messages %}<|start_header_id|>{{ 'ipython' if m.role == 'tool' else m.role }}<|end_header_id|>\n\n"
    "{% for c in m.tool_calls or [] %}{\"name\": \"{{ c.function.name }}\", \"parameters\": "
    "{{ c.function.arguments | tojson }}}{% else %}{{ m.content }}{% endfor %}<|eot_id|>{% endfor %}"
    "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{%- for m in messages %}{%- if m.role == 'user' %}{% if loop.last and tools %}[AVAILABLE_TOOLS] "
    "{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}[INST] {{ m.content }}[/INST]"
    "{%- elif m.role == 'tool' %}[TOOL_RESULTS] {{ m.content }}[/TOOL_RESULTS]"
    "{%- elif m.tool_calls %}[TOOL_CALLS] [{% for c in m.tool_calls %}{\"name\": \"{{ c.function.name }}\", "
    "\"arguments\": {{ c.function.arguments | tojson }}}{% endfor %}]{{ eos_token }}"
    "{%- else %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}"
)
FAMILIES = {  # format -> (chat template or None for the bundled one, added tokens, added special tokens)
    "hermes": (HERMES_TEMPLATE, ["<tool_call>", "</tool_call>"], []),
    "llama3": (LLAMA_TEMPLATE, [], ["<|python_tag|>"]),
    "mistral": (MISTRAL_TEMPLATE, [], ["[TOOL_CALLS]"]),
    "json": (None, [], []),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_engine(request, tmp_path_factory, bundled_tokenizer_dir):
    """A started engine over a tiny random model whose tokenizer carries the family's template and tokens."""
    from oikyo.models.loading import load_tokenizer
    from oikyo.serve.engine.core import GenerationEngine

    template, added, special = FAMILIES[request.param]
    tokenizer = load_tokenizer(bundled_tokenizer_dir)
    tokenizer.add_tokens(added)
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    if template is not None:
        tokenizer.chat_template = template
    folder = tmp_path_factory.mktemp(f"family-{request.param}")
    tokenizer.save_pretrained(folder / "tokenizer")
    model_dir = random_model_dir(folder / "model", folder / "tokenizer")
    engine = GenerationEngine(model_dir, max_batch_size=2, num_threads=1)
    engine.start()
    yield request.param, engine
    engine.stop(drain=False, timeout=10)


def _forced_call(fmt: str, tokenizer, token_ids: list[int]) -> dict:
    """The JSON object of the one call a model wrote in ``fmt``'s format (its raw tokens, markers included);
    fails unless the whole answer is that call in that format."""
    import re

    raw = tokenizer.decode(token_ids)  # special tokens kept: what the model produced
    if fmt == "hermes":
        tag_open, tag_close = tokenizer.convert_tokens_to_ids(["<tool_call>", "</tool_call>"])
        assert token_ids[0] == tag_open and token_ids[-1] == tag_close, raw  # the tags as the tokens Qwen uses
        inner = re.fullmatch(r"<tool_call>\n(\{.*\})\n</tool_call>", raw, re.S)
    elif fmt == "mistral":
        assert token_ids[0] == tokenizer.convert_tokens_to_ids("[TOOL_CALLS]"), raw  # the special token itself
        inner = re.fullmatch(r"\[TOOL_CALLS\] ?\[(\{.*\})\]", raw, re.S)
    else:
        assert "<|python_tag|>" not in raw
        inner = re.fullmatch(r"(\{.*\})", raw, re.S)
    assert inner, raw
    call = json.loads(inner.group(1))
    assert set(call) == {"name", "parameters" if fmt == "llama3" else "arguments"}, raw
    return call


@pytest.mark.parametrize("stream", [False, True])
def test_a_forced_call_is_written_in_the_model_familys_format(family_engine, stream, monkeypatch):
    """tool_choice "required" or a named function: random tiny weights write the one call the way the chat
    template's family does (hermes tags, llama3 "parameters", Mistral's [TOOL_CALLS] token, bare JSON), and
    the answer comes back as tool_calls through the official client."""
    from openai import OpenAI

    from oikyo.serve.gateway.httpapi import shared_token
    from oikyo.serve.gateway.replica import create_replica_app
    from oikyo.serve.gateway.served_models import ModelSpec, ServedNames

    fmt, engine = family_engine
    assert oa.tool_parser(engine.tokenizer, _chat(tools=[CITY])).format == fmt
    handles = []  # what the replica submitted: their results hold the tokens the model produced
    submit = engine.submit

    def recording_submit(request):
        handles.append(submit(request))
        return handles[-1]

    monkeypatch.setattr(engine, "submit", recording_submit)
    load_dir = str(engine.model_dir)
    spec = ModelSpec(id="tiny", kind="base", load_dir=load_dir, base_model=load_dir)
    server = ThreadServer(create_replica_app(engine, ServedNames(load_dir, [spec]),
                                             authenticate=shared_token(ROUTER_TOKEN)))
    try:
        client = OpenAI(base_url=f"{server.url}/v1", api_key=ROUTER_TOKEN, max_retries=0, timeout=60)
        for names, answer in _forced_answers(client, "tiny", stream):
            written = _forced_call(fmt, engine.tokenizer, handles[-1].result().token_ids)
            assert written["name"] in names
            [call] = answer.choices[0].message.tool_calls
            assert answer.choices[0].finish_reason == "tool_calls" and answer.choices[0].message.content is None
            arguments = written["parameters" if fmt == "llama3" else "arguments"]
            assert (call.function.name, json.loads(call.function.arguments)) == (written["name"], arguments)
            allowed = [{"city": "Paris"}, {"city": "Rome"}] if call.function.name == "get_weather" else [{}]
            assert arguments in allowed
    finally:
        server.stop()


def test_a_marker_the_tokenizer_lacks_is_written_as_text(bundled_tokenizer):
    """Without <tool_call> or [TOOL_CALLS] among its tokens, the forced call spells the marker out."""
    import llguidance.hf

    from oikyo.serve.gateway.tool_calls import forced_call_grammar

    tokenizer = llguidance.hf.from_tokenizer(bundled_tokenizer)
    added = bundled_tokenizer.get_added_vocab()
    for fmt, forced in (("hermes", b'<tool_call>\n{"name":"get_weather","arguments":{"city":"'),
                        ("mistral", b"[TOOL_CALLS]"), ("llama3", b'{"name":"get_weather","parameters":{"city":"'),
                        ("json", b'{"name":"get_weather","arguments":{"city":"')):
        matcher = llguidance.LLMatcher(tokenizer, forced_call_grammar([CITY], fmt, added))
        assert matcher.compute_ff_bytes() == forced, fmt


@pytest.mark.parametrize("fmt", ["hermes", "llama3", "mistral", "json"])
def test_a_schema_llguidance_cannot_compile_is_refused_in_every_format(fmt):
    from oikyo.serve.engine.grammar import GrammarError
    from oikyo.serve.gateway.tool_calls import forced_call_grammar

    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}
    with pytest.raises(GrammarError):
        forced_call_grammar([bad], fmt, {})
    with pytest.raises(GrammarError):
        forced_call_grammar([{"type": "function", "function": {"name": "f", "parameters": "nonsense"}}], fmt, {})


def test_tool_choice_none_neither_offers_nor_parses_tools(bundled_tokenizer):
    auto, none = _chat(tools=[WEATHER]), _chat(tools=[WEATHER], tool_choice="none")
    decode = bundled_tokenizer.decode
    assert "get_weather" in decode(oa.chat_prompt_ids(bundled_tokenizer, auto))
    assert "get_weather" not in decode(oa.chat_prompt_ids(bundled_tokenizer, none))
    assert oa.tool_parser(bundled_tokenizer, auto).format == "json"
    assert oa.tool_parser(bundled_tokenizer, none) is None


# ----------------------------------------------------------------------------- round trips


class ScriptedEngine:
    """Test double of the generation engine: answers each request with the next scripted text,
    emitted token by token (the bundled tokenizer's pieces) on a thread, like the real scheduler."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.context_length = 2048
        self.adapters: dict = {}
        self.running = True
        self.model_dir = "scripted"
        self.script: list[str] = []
        self.prompts: list[list[int]] = []

    def submit(self, request):
        from oikyo.serve.engine.requests import GenerationHandle, GenerationResult

        handle = GenerationHandle(request)
        text = self.script.pop(0)
        self.prompts.append(list(request.prompt_ids))
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]

        def run():
            for k in range(len(ids)):  # each token's text, as the detokenizer releases it
                handle._emit(self.tokenizer.decode(ids[: k + 1])[len(self.tokenizer.decode(ids[:k])):])
            handle._finish(GenerationResult(token_ids=ids, text=text, finish_reason="stop",
                                            prompt_tokens=len(request.prompt_ids), completion_tokens=len(ids),
                                            time_to_first_token=0.0, total_time=0.0))

        threading.Thread(target=run, daemon=True).start()
        return handle


@pytest.fixture
def scripted(bundled_tokenizer, workspace):
    """A router (keys from the store, requests logged) before a replica app over a :class:`ScriptedEngine`;
    yields ``(engine, openai client, logged)``: ``logged()`` is the response texts the router recorded."""
    from openai import OpenAI

    from oikyo.serve.gateway import keys
    from oikyo.serve.gateway.ab import Variant
    from oikyo.serve.gateway.httpapi import shared_token, store_keys
    from oikyo.serve.gateway.replica import create_replica_app
    from oikyo.serve.gateway.replicas import PoolSpec, StaticPool
    from oikyo.serve.gateway.router import Routing, create_router_app
    from oikyo.serve.gateway.served_models import ModelSpec, ServedNames

    engine = ScriptedEngine(bundled_tokenizer)
    spec = ModelSpec(id="scripted", kind="base", load_dir="scripted", base_model="scripted")
    names = ServedNames("scripted", [spec])
    replica = ThreadServer(create_replica_app(engine, names, authenticate=shared_token(ROUTER_TOKEN),
                                              blocking_auth=False))
    pool = StaticPool(PoolSpec(name="scripted", load_dir="scripted", models=[spec]), [replica.url])
    routing = Routing("bot", [Variant(label="scripted", model="scripted", weight=100.0)], {"scripted": pool},
                      {"scripted": "scripted"}, {"scripted": names})
    app = create_router_app("bot", routing, authenticate=store_keys(), token=ROUTER_TOKEN, log_requests=True)
    router = ThreadServer(app)
    _, secret = keys.create("test")

    def logged() -> list[str]:
        from oikyo.serve.gateway.request_log import logged_requests

        app.state.recorder.flush()
        return [r.response for r in logged_requests("bot")]

    yield engine, OpenAI(base_url=f"{router.url}/v1", api_key=secret, max_retries=0, timeout=30), logged
    router.stop()
    replica.stop()


CALL_TEXT = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def test_round_trip_call_result_answer_with_the_openai_client(scripted):
    engine, client, logged = scripted
    engine.script = [CALL_TEXT, "It is sunny and 18 C in Paris."]
    first = client.chat.completions.create(model="bot", messages=QUESTION, tools=[WEATHER, TIME])
    [choice] = first.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    prompt = engine.tokenizer.decode(engine.prompts[0])
    assert '"name": "get_time"' in prompt  # the tools were offered

    # The assistant's call and the tool's result go back into the conversation, through the chat template.
    history = QUESTION + [choice.message.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny", "celsius": 18}'}]
    final = client.chat.completions.create(model="bot", messages=history, tools=[WEATHER, TIME])
    assert final.choices[0].message.content == "It is sunny and 18 C in Paris."
    assert final.choices[0].finish_reason == "stop" and not final.choices[0].message.tool_calls
    assert logged() == [CALL_TEXT, "It is sunny and 18 C in Paris."]  # calls logged as canonical JSON lines
    prompt = engine.tokenizer.decode(engine.prompts[1])
    assert ('<|im_start|>assistant\n{"name": "get_weather", "arguments": {"city": "Paris"}}<|im_end|>\n'
            '<|im_start|>tool\n{"sky": "sunny", "celsius": 18}<|im_end|>\n<|im_start|>assistant\n') in prompt


def test_streamed_tool_calls_assemble_in_the_openai_client(scripted):
    engine, client, logged = scripted
    engine.script = ['I will look both up.\n' + CALL_TEXT + '\n{"name": "get_time", "arguments": {}}']
    with client.chat.completions.stream(model="bot", messages=QUESTION, tools=[WEATHER, TIME]) as stream:
        chunks = [event.chunk for event in stream if event.type == "chunk"]
        final = stream.get_final_completion()
    [choice] = final.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I will look both up."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {})]
    # OpenAI's shape: a call's first delta has its index, id, type, name and empty arguments; then the arguments.
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or ())]
    assert [d.index for d in deltas] == [0, 0, 1, 1]
    assert deltas[0].id.startswith("call_") and deltas[0].type == "function" and deltas[0].function.arguments == ""
    assert deltas[1].id is None and json.loads(deltas[1].function.arguments) == {"city": "Paris"}
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 2  # the text before the calls streamed piece by piece, not held to the end
    assert logged() == ['I will look both up.\n' + CALL_TEXT + '\n{"name": "get_time", "arguments": {}}']


def test_each_streamed_choice_is_parsed_on_its_own(scripted):
    engine, client, _ = scripted
    engine.script = [CALL_TEXT, "No call here."]
    with client.chat.completions.stream(model="bot", messages=QUESTION, tools=[WEATHER], n=2) as stream:
        final = stream.get_final_completion()
    calling, plain = final.choices
    assert calling.finish_reason == "tool_calls" and calling.message.content is None
    assert [c.function.name for c in calling.message.tool_calls] == ["get_weather"]
    assert plain.finish_reason == "stop" and plain.message.content == "No call here." and not plain.message.tool_calls


def test_tool_choice_none_and_plain_answers_stay_text(scripted):
    engine, client, _ = scripted
    engine.script = [CALL_TEXT, "Plain {text} answer."]
    none = client.chat.completions.create(model="bot", messages=QUESTION, tools=[WEATHER], tool_choice="none")
    assert none.choices[0].message.content == CALL_TEXT and not none.choices[0].message.tool_calls
    assert none.choices[0].finish_reason == "stop"
    assert "get_weather" not in engine.tokenizer.decode(engine.prompts[0])
    stream = client.chat.completions.create(model="bot", messages=QUESTION, tools=[WEATHER], stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Plain {text} answer."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


@pytest.mark.slow
def test_the_bundled_model_calls_a_tool_after_one_example(bundled_model_dir):
    """The real SmolLM2-135M, asked with tools alone, answers in prose (tried: it never wrote a call);
    shown one earlier exchange with a call in the history, it calls the tool for a new city."""
    from openai import OpenAI

    from oikyo.serve.engine.core import GenerationEngine
    from oikyo.serve.gateway.httpapi import shared_token
    from oikyo.serve.gateway.replica import create_replica_app
    from oikyo.serve.gateway.served_models import ModelSpec, ServedNames

    engine = GenerationEngine(bundled_model_dir, max_batch_size=2)
    spec = ModelSpec(id="smol", kind="base", load_dir=str(bundled_model_dir), base_model=str(bundled_model_dir))
    server = ThreadServer(create_replica_app(engine, ServedNames(str(bundled_model_dir), [spec]),
                                             authenticate=shared_token(ROUTER_TOKEN), owns_engine=True))
    try:
        client = OpenAI(base_url=f"{server.url}/v1", api_key=ROUTER_TOKEN, max_retries=0, timeout=300)
        example = [{"role": "user", "content": "What is the weather in Rome?"},
                   {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                       "name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
                   {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 21, "sky": "clear"}'},
                   {"role": "assistant", "content": "It is 21 C and clear in Rome."},
                   {"role": "user", "content": "What is the weather in Paris?"}]
        params = {"model": "smol", "messages": example, "tools": [WEATHER], "max_tokens": 24, "temperature": 0}
        answer = client.chat.completions.create(**params)
        [call] = answer.choices[0].message.tool_calls
        assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
        assert answer.choices[0].finish_reason == "tool_calls"
        with client.chat.completions.stream(**params) as stream:
            streamed = stream.get_final_completion().choices[0].message.tool_calls
        assert [(c.function.name, c.function.arguments) for c in streamed] == [(call.function.name,
                                                                                call.function.arguments)]
    finally:
        server.stop()


def test_a_conversation_the_template_refuses_is_a_400_not_a_500(bundled_tokenizer_dir):
    """Templates check conversations themselves (Mistral's and Gemma's insist that roles alternate)."""
    from oikyo.models.loading import load_tokenizer

    tokenizer = load_tokenizer(bundled_tokenizer_dir)
    tokenizer.chat_template = HERMES_TEMPLATE.replace("{%- for m in messages %}", (
        "{%- for m in messages %}{% if loop.index0 > 0 and m.role == messages[loop.index0 - 1].role %}"
        "{{ raise_exception('Conversation roles must alternate') }}{% endif %}"), 1)
    request = _chat(messages=QUESTION + [{"role": "user", "content": "Hello?"}])
    with pytest.raises(oa.ApiError) as error:
        oa.chat_prompt_ids(tokenizer, request)
    assert error.value.status == 400 and "roles must alternate" in error.value.message
