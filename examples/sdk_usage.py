"""An agent using piper-mcp's `PiperClient` the way the published SDK's README shows.

Configure it like any Piper agent, through PIPER_* environment variables
(docs/configuration.md), e.g. against a local Piper. Keep the client secret off the
command line and out of shell history: name it in Secret Manager
(PIPER_CLIENT_SECRET_NAME), or read it into the variable from a file:

    read -r PIPER_CLIENT_SECRET < ~/.config/my-agent/client-secret && export PIPER_CLIENT_SECRET
    PIPER_CLIENT_ID=my-agent \
    PIPER_RESOLVE_MAPPING_URL=http://127.0.0.1:8787/piper-resolve-variable-mapping ... \
    python examples/sdk_usage.py
"""

from __future__ import annotations

import logging
import os
import sys

from piper_mcp.piper import (
    PiperAuthError,
    PiperClient,
    PiperConfigError,
    PiperError,
    PiperLinkNeededError,
)

logging.basicConfig(level=logging.WARNING)

GRANTED = os.environ.get("EXAMPLE_GRANTED_VARIABLE", "MyGmailVar")
UNGRANTED = os.environ.get("EXAMPLE_UNGRANTED_VARIABLE", "MyOpenAIVar")


def show(variable: str, client: PiperClient) -> None:
    print(f"--- get_secret({variable!r}) ---")
    try:
        info = client.get_secret(variable)
    except PiperLinkNeededError as error:
        print(f"Piper Link is not running: {error}")
        return
    except PiperAuthError as error:
        if error.error_code == "mapping_not_found":
            print(f"Not granted yet. {error.advice}")
        else:
            print(f"Piper refused: {error}")
        return
    except PiperConfigError as error:
        print(f"Configuration problem: {error}")
        return
    print(f"  source: {info.get('source')}")
    if info.get("source") == "piper_sts":
        print(f"  STS token (last 6): ...{str(info['value'])[-6:]}")
        # The step the SDK's README leaves as an illustration, done for real:
        secret = client.read_secret_value(info)
        print(f"  secret read with it (last 4): ...{secret[-4:]}")
    elif info.get("source") == "environment_variable":
        print(f"  from environment variable {info.get('env_var_name')}")


def main() -> int:
    try:
        client = PiperClient.from_settings()
    except PiperError as error:
        print(f"FATAL: {error}")
        return 1
    with client:
        show(GRANTED, client)
        fallback_name = f"{client.env_variable_prefix}{UNGRANTED.upper().replace(' ', '_')}"
        os.environ[fallback_name] = "env_value_for_the_example"
        show(UNGRANTED, client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
