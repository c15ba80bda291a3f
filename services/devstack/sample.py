"""Loading the sample community through the real HTTP API, as any integration would."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import httpx


def sample_community() -> dict[str, list[dict[str, Any]]]:
    text = resources.files("services.devstack").joinpath("sample_community.json").read_text("utf-8")
    data: dict[str, list[dict[str, Any]]] = json.loads(text)
    return data


async def load_sample(base_url: str, api_key: str) -> tuple[int, int]:
    """Post the sample's people, then their interests; return how many of each were accepted."""
    data = sample_community()
    headers = {"Authorization": f"Bearer {api_key}", "X-Correlation-ID": "sample-community"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        contacts = await client.post("/v1/contacts", json={"items": data["contacts"]})
        contacts.raise_for_status()
        interests = await client.post("/v1/interests", json={"items": data["interests"]})
        interests.raise_for_status()
    return contacts.json()["accepted"], interests.json()["accepted"]
