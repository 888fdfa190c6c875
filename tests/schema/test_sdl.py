"""The committed SDL is what the code serves."""

from __future__ import annotations

from pathlib import Path

from settle.schema.schema import schema

SDL_PATH = Path(__file__).resolve().parents[2] / "schema.graphql"


def test_committed_sdl_matches_the_code() -> None:
    # given the SDL committed beside the code
    committed = SDL_PATH.read_text(encoding="utf-8")
    # when the schema is printed as `settle export-schema` prints it
    current = schema.as_str() + "\n"
    # then they are identical; regenerate with `make schema` after changing the schema
    assert committed == current, "schema.graphql is stale: run `make schema` and commit it"
