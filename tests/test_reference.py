"""The reference facts kept in the repository are the team's reference notes, byte for byte."""

from __future__ import annotations

import pytest

from conftest import IN_REPO_REFERENCE, SHARED_REFERENCE

FILES = ["llavaguard-v1.2-policy.txt", "llavaguard-v1.2-taxonomy.json"]


def test_in_repo_reference_facts_are_present(reference):
    assert reference == IN_REPO_REFERENCE
    for name in FILES:
        assert (reference / name).stat().st_size > 0, name


@pytest.mark.parametrize("name", FILES)
def test_in_repo_copy_matches_the_shared_reference(name):
    shared = SHARED_REFERENCE / name
    if not shared.is_file():
        pytest.skip(f"no shared reference at {SHARED_REFERENCE} (set LLAVAGUARD_REFERENCE)")
    assert (IN_REPO_REFERENCE / name).read_bytes() == shared.read_bytes(), (
        f"tests/reference/{name} differs from {shared}: copy the shared one over"
    )
