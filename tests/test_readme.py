"""The README documents every setting the code reads (the snippets themselves run in test_service_server)."""

from __future__ import annotations

import re

from api.settings import HttpSettings
from runners.config import EngineConfig
from runners.models.asr import ENV_PREFIX, TranscriberConfig
from tests.readme_snippets import README


def test_every_environment_variable_is_documented() -> None:
    documented = set(re.findall(r"^\| `(EDITX_[A-Z_]+)` \|", README.read_text(), flags=re.M))
    expected = {f"EDITX_{name.upper()}" for name in EngineConfig.model_fields}
    expected |= {f"{ENV_PREFIX}{name.upper()}" for name in TranscriberConfig.model_fields}
    expected |= {f"EDITX_{name.upper()}" for name in HttpSettings.model_fields}
    assert expected - documented == set(), "undocumented"
    assert documented - expected == set(), "documented but not read by the code"
