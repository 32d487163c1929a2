"""JSON Lines lines -> token ids that fit the context (see
`keras_gpt.data.examples`, which caches and pads them).

`tokenize_sft` and `tokenize_preferences` return lists of id rows (and,
for SFT, which ids the loss counts), the source line numbers and counts;
an error names the file, the line and the field.
"""

from keras_gpt.data import jsonl


def _encode(tokenizer, text, where, field):
    try:
        return tokenizer.encode(text)
    except ValueError as error:
        raise ValueError(f"{where}: field {field!r}: the tokenizer cannot "
                         f"encode it: {error}") from None


def tokenize_sft(path, tokenizer, context_length):
    """Per SFT line: ids (prompt or chat turns, completion, end-of-text)
    and a 0/1 per id (learned); prompts cut from the left to fit
    `context_length + 1` ids, or an error if the learned part cannot fit."""
    limit, rows, learned, lines, truncated = context_length + 1, [], [], [], 0
    for number, record in jsonl.read_jsonl(path):
        where = f"{path}, line {number}"
        ids, mask = [], []
        for text, trained, field in jsonl.sft_segments(record, where):
            piece = ([tokenizer.eot_id] if text is jsonl.EOT
                     else _encode(tokenizer, text, where, field))
            ids += piece
            mask += [trained] * len(piece)
        if len(ids) > limit:
            first = mask.index(True)
            if first < len(ids) - limit + 1:
                raise ValueError(
                    f"{where}: the example has {len(ids)} tokens, of which "
                    f"the last {len(ids) - first} are learned (completion or "
                    "assistant turns, end-of-text included); cutting the "
                    f"prompt from the left keeps at most context_length + 1 "
                    f"= {limit} tokens, so the learned part may have at most "
                    f"context_length = {context_length}. Shorten it, or drop "
                    "the line.")
            ids, mask = ids[len(ids) - limit:], mask[len(mask) - limit:]
            truncated += 1
        rows.append(ids)
        learned.append(mask)
        lines.append(number)
    _check_any(rows, path)
    return {"tokens": rows, "learned": learned, "lines": lines,
            "stats": {"truncated": truncated}}


def tokenize_preferences(path, tokenizer, context_length):
    """Per preference line: prompt ids and the chosen and rejected ids (each
    ending with end-of-text), the prompt cut from the left so that it and
    the longer completion fit `context_length + 1` ids; identical pairs
    skipped and counted."""
    limit = context_length + 1
    prompts, chosen, rejected, lines = [], [], [], []
    truncated, identical = 0, []
    for number, record in jsonl.read_jsonl(path):
        where = f"{path}, line {number}"
        prompt, good, bad = jsonl.preference_texts(record, where)
        p = (_encode(tokenizer, prompt, where, "prompt") if prompt
             else []) or [tokenizer.eot_id]
        c = _encode(tokenizer, good, where, "chosen") + [tokenizer.eot_id]
        r = _encode(tokenizer, bad, where, "rejected") + [tokenizer.eot_id]
        if c == r:
            identical.append(number)
            continue
        longest = max(len(c), len(r))
        if longest > limit - 1:
            field = "chosen" if len(c) >= len(r) else "rejected"
            raise ValueError(
                f"{where}: field {field!r} has {longest} tokens with its "
                "end-of-text token; beside at least one prompt token it "
                f"needs {longest + 1} > context_length + 1 = {limit}: a "
                f"completion may have at most context_length = "
                f"{context_length} tokens. Shorten it, or drop the line.")
        if len(p) + longest > limit:
            p = p[len(p) + longest - limit:]
            truncated += 1
        prompts.append(p)
        chosen.append(c)
        rejected.append(r)
        lines.append(number)
    _check_any(prompts, path, identical)
    return {"prompts": prompts, "chosen": chosen, "rejected": rejected,
            "lines": lines,
            "stats": {"truncated": truncated, "identical": len(identical),
                      "identical_lines": identical[:10]}}


def _check_any(rows, path, identical=()):
    if not rows:
        why = (f" ({len(identical)} pairs had chosen == rejected)"
               if identical else "")
        raise ValueError(f"{path} holds no examples{why}.")
