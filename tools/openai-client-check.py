#!/usr/bin/env python3
"""Talk to a running `torchless serve` with the official OpenAI Python client (openai==3.54.0,
installed by tools/test.sh): one plain and one streamed chat completion, greedy, so both must give
the same text. Prints one JSON object with what came back; exits non-zero on any failure.

Usage: tools/openai-client-check.py BASE_URL     (e.g. http://127.0.0.1:8080/v1)
"""
import json
import sys

import openai


def main() -> int:
    base_url = sys.argv[1]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
    models = client.models.list()
    model_id = models.data[0].id
    messages = [{"role": "user", "content": "What is the capital of France?"}]

    plain = client.chat.completions.create(
        model=model_id, messages=messages, max_tokens=24, temperature=0
    )
    plain_text = plain.choices[0].message.content

    chunks = client.chat.completions.create(
        model=model_id, messages=messages, max_tokens=24, temperature=0, stream=True
    )
    streamed, finish, n_chunks, ids = [], None, 0, set()
    for chunk in chunks:
        n_chunks += 1
        ids.add(chunk.id)
        choice = chunk.choices[0]
        if choice.delta.content:
            streamed.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason

    out = {
        "model": model_id,
        "plain": plain_text,
        "plain_finish": plain.choices[0].finish_reason,
        "prompt_tokens": plain.usage.prompt_tokens,
        "completion_tokens": plain.usage.completion_tokens,
        "streamed": "".join(streamed),
        "stream_finish": finish,
        "stream_chunks": n_chunks,
        "stream_ids": len(ids),
    }
    print(json.dumps(out))
    ok = (
        plain_text
        and out["streamed"] == plain_text
        and finish in ("stop", "length")
        and len(ids) == 1
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
