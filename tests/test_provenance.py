"""Provenance: the commit recorded in every results file."""

from mta.provenance import git_commit


def test_mta_commit_overrides_the_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("MTA_COMMIT", "abc123")
    assert git_commit() == "abc123"
    monkeypatch.delenv("MTA_COMMIT")
    assert git_commit(tmp_path) == "unknown"  # not a git checkout
    assert git_commit() not in ("abc123", "unknown")
