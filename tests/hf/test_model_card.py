"""save_pretrained writes a model card that tells a transformers user to `import mta` first."""

import pytest

pytest.importorskip("transformers")

from hf_cases import tiny_config, tiny_model  # noqa: E402


def test_save_pretrained_writes_a_card_that_says_import_mta(tmp_path):
    model = tiny_model(tiny_config())
    model.save_pretrained(tmp_path / "fresh")
    card = (tmp_path / "fresh" / "README.md").read_text()
    assert "import mta" in card and "does not recognize this architecture" in card
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "README.md").write_text("my card")
    model.save_pretrained(tmp_path / "own")
    assert (tmp_path / "own" / "README.md").read_text() == "my card"  # a card of the user's is kept
