"""merlin's tests: they run from a checkout, never from an installed merlin."""

from pathlib import Path

# The checkout the tests run from: they read its docs, docker/ and pyproject.toml as files.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
