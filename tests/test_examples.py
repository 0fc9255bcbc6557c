"""Every example config is valid as it is shipped (checked like `defectlab validate`)."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_example_config_validates(path, run_cli):
    result = run_cli("validate", str(path))
    assert result.exit_code == 0, result.output
