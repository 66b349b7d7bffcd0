"""The customer-facing texts (issue 20, item 3): every text in every language, with the same
fields in each, and the language chosen from what the customer's side says."""

from __future__ import annotations

import string

import pytest

from nextbest.transparency.texts import LANGUAGES, TEXTS, language_of, say


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


@pytest.mark.parametrize("key", sorted(TEXTS))
def test_every_text_is_written_in_every_language_with_the_same_fields(key: str) -> None:
    templates = TEXTS[key]
    assert set(templates) == set(LANGUAGES)
    fields = {language: _fields(t) for language, t in templates.items()}
    assert len({frozenset(f) for f in fields.values()}) == 1, fields
    for template in templates.values():
        assert template == template.strip()
        assert template


def test_a_language_is_read_from_a_tag_a_locale_or_a_header() -> None:
    assert language_of("da-DK") == "da"
    assert language_of(None, "nl_NL") == "nl"
    assert language_of("fr-FR,de;q=0.8") == "de"
    assert language_of("ES") == "es"
    assert language_of("fr", "", 3) == "en"


def test_say_fills_the_facts_in_and_reads_english_for_a_language_it_lacks() -> None:
    assert say("reason.topic_interest", "de", topic="Hypotheken", count=5, days=14) == (
        "Sie haben in den letzten 14 Tagen 5-mal Seiten zu Hypotheken angesehen"
    )
    assert say("reason.eligible", "fr", name="Savings") == "You can get Savings"
    with pytest.raises(KeyError):
        say("reason.nope", "en")
