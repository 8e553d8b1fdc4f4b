"""Shared fixtures of the Tuya edge tests: the vectors file and a fake Tuya cloud at the HTTP seam."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

VECTORS_PATH = Path(__file__).resolve().parents[2] / "data" / "tuya" / "vectors.json"


def load_vectors() -> dict[str, Any]:
    with VECTORS_PATH.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    return load_vectors()
