"""Path templates of interfaces: ``/api/v1/customers/{customer_no}/bills``.

A template is parsed once when an interface is saved, so the gateway can later compile every
template into its routing table without meeting a malformed one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PathTemplate", "PathTemplateError"]

MAX_TEMPLATE_LENGTH = 512
MAX_SEGMENTS = 32
_LITERAL = re.compile(r"[A-Za-z0-9._~\-]+")
_PARAM = re.compile(r"\{([a-z_][a-z0-9_]{0,63})\}")


class PathTemplateError(ValueError):
    """A path template that cannot be routed."""


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A parsed template: its segments, parameter names and routing shape."""

    template: str
    segments: tuple[str, ...]
    params: tuple[str, ...]

    @property
    def shape(self) -> str:
        """The template with parameter names erased: two templates of one shape clash."""
        return "/" + "/".join("{}" if s.startswith("{") else s for s in self.segments)

    @classmethod
    def parse(cls, template: str) -> PathTemplate:
        """Parse and validate ``template``; raise :class:`PathTemplateError` with the reason."""
        if not template.startswith("/"):
            raise PathTemplateError("must start with '/'")
        if len(template) > MAX_TEMPLATE_LENGTH:
            raise PathTemplateError(f"must be at most {MAX_TEMPLATE_LENGTH} characters")
        if template != "/" and template.endswith("/"):
            raise PathTemplateError("must not end with '/'")
        segments = tuple(template[1:].split("/")) if template != "/" else ()
        if len(segments) > MAX_SEGMENTS:
            raise PathTemplateError(f"must have at most {MAX_SEGMENTS} segments")
        params: list[str] = []
        for segment in segments:
            if not segment:
                raise PathTemplateError("must not contain empty segments ('//')")
            param = _PARAM.fullmatch(segment)
            if param is not None:
                name = param.group(1)
                if name in params:
                    raise PathTemplateError(f"parameter {{{name}}} appears twice")
                params.append(name)
            elif segment in {".", ".."}:
                raise PathTemplateError("must not contain '.' or '..' segments")
            elif not _LITERAL.fullmatch(segment):
                raise PathTemplateError(
                    f"segment {segment!r} must be a literal of [A-Za-z0-9._~-] "
                    "or a whole-segment parameter like {customer_no}"
                )
        return cls(template=template, segments=segments, params=tuple(params))
