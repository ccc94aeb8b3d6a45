"""Process logging: structlog JSON (or console) lines on stderr, for gridgate and libraries.

Other libraries' INFO lines are routine: one per HTTP request the registry client and the
demo systems make (a heartbeat every few seconds each), one per server started, one per
migration step. At ``info`` they are held back, so that a console shows what needs attention;
``debug`` shows everything.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Route structlog and standard-library logging through one renderer: gridgate's own
    messages from ``level`` on, other libraries' from ``warning`` on (unless ``debug``)."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    ours = logging.getLevelNamesMapping()[level.upper()]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(ours if ours <= logging.DEBUG else max(ours, logging.WARNING))
    logging.getLogger("gridgate").setLevel(ours)
    # uvicorn's access log would duplicate the gateway's own; its errors still come through.
    logging.getLogger("uvicorn.access").disabled = True
