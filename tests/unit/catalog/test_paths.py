"""Interface path templates."""

from __future__ import annotations

import pytest

from gridgate.catalog.paths import PathTemplate, PathTemplateError


def test_parse_and_shape() -> None:
    parsed = PathTemplate.parse("/api/v1/customers/{customer_no}/bills")
    assert parsed.params == ("customer_no",)
    assert parsed.segments == ("api", "v1", "customers", "{customer_no}", "bills")
    assert parsed.shape == "/api/v1/customers/{}/bills"
    assert PathTemplate.parse("/api/v1/customers/{no}/bills").shape == parsed.shape
    assert PathTemplate.parse("/").segments == ()


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("api/v1", "start with"),
        ("/api/v1/", "end with"),
        ("/api//v1", "empty segments"),
        ("/api/{a}/{a}", "twice"),
        ("/api/x{a}", "whole-segment"),
        ("/api/{A}", "whole-segment"),
        ("/api/../admin", "'..'"),
        ("/api/sp ace", "literal"),
        ("/" + "a/" * 40 + "b", "segments"),
        ("/" + "a" * 600, "characters"),
    ],
)
def test_bad_templates(template: str, reason: str) -> None:
    with pytest.raises(PathTemplateError, match=reason):
        PathTemplate.parse(template)
