"""JSON Lines for fine-tuning, with TRL's field names, and the chat template.

Supervised fine-tuning (SFT), one JSON object per line:

- `{"prompt": "...", "completion": "..."}`: the model learns the
  completion (and the end-of-text token after it), given the prompt.
- `{"messages": [{"role": "user", "content": "..."}, {"role": "assistant",
  "content": "..."}, ...]}`: a conversation in the chat template below; the
  model learns every assistant message (and its end-of-text token).

Preferences (DPO): `{"prompt": "...", "chosen": "...", "rejected": "..."}`.

Blank lines are skipped; other fields are ignored. A line that is not a
JSON object, lacks a field, has one of the wrong type, or an empty
completion (or assistant message, chosen or rejected text) is an error
naming the file, the line number and the field. A pair whose chosen and
rejected texts are equal teaches nothing: it is skipped and counted.

The chat template: each message is `"{role}:\\n"` followed by its content
and the end-of-text token, so

    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]

reads `"user:\\nHi<|endoftext|>assistant:\\nHello<|endoftext|>"`; a prompt
asking for the assistant's turn ends with `"assistant:\\n"` (`chat_text(...,
add_generation_prompt=True)`). Any tokenizer here encodes it: the roles are
plain words, and `<|endoftext|>` is one token in every kind. Pieces are
encoded one by one and joined, which gives the same ids as encoding the
whole text (a newline and the end-of-text token are token boundaries).
"""

import json
from pathlib import Path

EOT = object()  # a segment that is the end-of-text token
ASSISTANT = "assistant"


def chat_text(messages, add_generation_prompt=False):
    """The chat template's text of `messages` (see the module docstring).

    Args:
        messages: A list of `{"role": str, "content": str}` dicts.
        add_generation_prompt: End with `"assistant:\\n"`, the prompt for
            the model's next turn.

    Returns:
        A string to encode, or to pass to `keras_gpt.generate` as a prompt.

    Example:

    ```python
    prompt = chat_text([{"role": "user", "content": "Hi"}],
                       add_generation_prompt=True)
    keras_gpt.generate(model, prompt, tokenizer=tokenizer, max_new_tokens=40)
    ```
    """
    from keras_gpt.tokenizers import EOT_TOKEN

    messages = _messages(messages, "messages")
    text = "".join(f"{m['role']}:\n{m['content']}{EOT_TOKEN}" for m in messages)
    return text + (f"{ASSISTANT}:\n" if add_generation_prompt else "")


def read_jsonl(path):
    """Yields `(line number, object)` for each non-blank line of `path`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not UTF-8, not JSON, or not a JSON object
            (the message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {path}.")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}, line {number}: not UTF-8 "
                                 f"({error.reason} at byte {error.start}).") \
                    from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON "
                                 f"({error.msg} at column {error.colno}).") \
                    from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON "
                                 f"object, got {_json_type(record)}.")
            yield number, record


def sft_segments(record, where=""):
    """One SFT line as `[(text or EOT, trained, field), ...]`, in order.

    `trained` marks what the loss counts: the completion, or each assistant
    message, and the end-of-text token after it. An empty prompt starts
    from the end-of-text token (as `keras_gpt.generate` does).

    Raises:
        ValueError: a missing or mistyped field, an empty completion, or
            messages without an assistant turn (`where` prefixes the
            message, e.g. "data.jsonl, line 3").
    """
    if "messages" in record:
        messages = _messages(record["messages"], "messages", where)
        if not any(m["role"] == ASSISTANT for m in messages):
            raise ValueError(f"{where}: field 'messages' has no message with "
                             f"role {ASSISTANT!r}: nothing to learn.")
        segments = []
        for i, m in enumerate(messages):
            trained = m["role"] == ASSISTANT
            if trained and not m["content"]:
                raise ValueError(f"{where}: field 'messages[{i}].content' is "
                                 "empty: an assistant message must say "
                                 "something.")
            segments += [(f"{m['role']}:\n", False, f"messages[{i}].role"),
                         (m["content"], trained, f"messages[{i}].content"),
                         (EOT, trained, None)]
        return segments
    if "prompt" not in record and "completion" not in record:
        raise ValueError(f"{where}: missing field 'prompt' and 'completion' "
                         "(or 'messages'): an SFT line is {\"prompt\": ..., "
                         "\"completion\": ...} or {\"messages\": [...]}.")
    prompt = _text(record, "prompt", where, allow_empty=True)
    completion = _text(record, "completion", where)
    return [(prompt or EOT, False, "prompt"), (completion, True, "completion"),
            (EOT, True, None)]


def preference_texts(record, where=""):
    """`(prompt, chosen, rejected)` strings of one preference line.

    Raises:
        ValueError: a missing or mistyped field, or an empty chosen or
            rejected text.
    """
    return (_text(record, "prompt", where, allow_empty=True),
            _text(record, "chosen", where), _text(record, "rejected", where))


def _text(record, field, where, allow_empty=False):
    if field not in record:
        raise ValueError(f"{where}: missing field {field!r}.")
    value = record[field]
    if not isinstance(value, str):
        hint = (" (conversational preference data is not read: write the "
                "prompt with keras_gpt.data.chat_text(messages, "
                "add_generation_prompt=True))"
                if isinstance(value, list) else "")
        raise ValueError(f"{where}: field {field!r} must be a string, got "
                         f"{_json_type(value)}{hint}.")
    if not value and not allow_empty:
        raise ValueError(f"{where}: field {field!r} is empty: there is "
                         "nothing to learn from it.")
    return value


def _messages(value, field, where="messages"):
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else _json_type(value)
        raise ValueError(f"{where}: field {field!r} must be a non-empty list "
                         f"of {{\"role\", \"content\"}} objects, got {got}.")
    for i, message in enumerate(value):
        name = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise ValueError(f"{where}: field {name!r} must be an object, got "
                             f"{_json_type(message)}.")
        for key in ("role", "content"):
            if key not in message:
                raise ValueError(f"{where}: missing field '{name}.{key}'.")
            if not isinstance(message[key], str):
                raise ValueError(f"{where}: field '{name}.{key}' must be a "
                                 f"string, got {_json_type(message[key])}.")
        if not message["role"]:
            raise ValueError(f"{where}: field '{name}.role' is empty.")
    return value


def _json_type(value):
    names = {dict: "an object", list: "a list", str: "a string",
             bool: "a boolean", type(None): "null", int: "a number",
             float: "a number"}
    return names.get(type(value), type(value).__name__)
