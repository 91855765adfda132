"""`caption_tokenizer`'s refusal is one line whatever the tokenizer backend said.

The message of a `TokenizerUnavailableError` is embedded whole; transformers' and tokenizers' own errors (which
`clipforge.text.hf_tokenizer` passes on in parentheses) can span lines, and the refusal printed them as they were.
"""

from __future__ import annotations

import pytest

from clipforge.text.families import TokenizerUnavailableError
from clipforge.train import build
from clipforge.train.config import TrainConfig, TrainConfigError


def test_a_backend_message_over_several_lines_is_refused_in_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(texts: list[str]) -> None:
        raise TokenizerUnavailableError(
            "tok.json: transformers' T could not read it (Can't load:\n- one\n- two)"
        )

    monkeypatch.setattr(build, "family_tokenizer", lambda model: unreadable)
    with pytest.raises(TrainConfigError) as raised:
        build.caption_tokenizer(object(), TrainConfig(model="my-model"))
    assert str(raised.value) == (
        "--model my-model: its captions cannot be tokenized: tok.json: transformers' T could not read it "
        "(Can't load: - one - two)"
    )
