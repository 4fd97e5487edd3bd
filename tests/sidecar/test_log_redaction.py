"""The log formatter's masking of secrets: what it masks, and that its cheap pre-check
(three substring searches before the pattern runs) never lets a match through."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from llmgate_sidecar.observability import logs

PIECES = st.sampled_from(["lg-", "sk-", "sk-ant-", "Bearer ", "BEARER\t", "bEaReR  ", "-",
                          "abcdefgh", "0123456789", "A_b-C", " ", '"', "é", "\n", "lg", "k-"])
TEXTS = st.one_of(st.text(max_size=80), st.lists(PIECES, max_size=12).map("".join))


@given(TEXTS)
def test_the_pre_check_never_changes_what_is_masked(text: str) -> None:
    assert logs.redact(text) == logs._SECRET.sub(logs._MASK, text)


def test_each_secret_shape_is_masked() -> None:
    line = ('{"a":"lg-AbCdEfGh123","b":"sk-ant-api03-xyzXYZ12","c":"BEARER tok.en_value=",'
            '"d":"bearer abcdefgh","e":"lg-short"}')
    masked = logs.redact(line)
    assert "AbCdEfGh123" not in masked and "xyzXYZ12" not in masked
    assert "tok.en_value" not in masked and "abcdefgh" not in masked
    assert masked.count(logs._MASK) == 4 and "lg-short" in masked  # 8 characters at least
