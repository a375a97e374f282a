"""A tiny prepared corpus (mta data prepare on in-test documents) for the long-context evaluations."""

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from mta.data.babi import GIVES, GRABS, MOVES, OBJECTS, PEOPLE, PLACES, QA5_PEOPLE  # noqa: E402
from mta.data.corpus import TextDomain, prepare  # noqa: E402
from mta.eval.background import Background  # noqa: E402

# Words of the haystack and of the templates, so that the tokenizer learns them and prompts stay short.
WORDS = ("the of and to in a that is was he for it with as his on be at by had are but from or secret number "
         "what where who did give there before north south east west").split()
WORDS += [w for phrase in MOVES + GRABS + GIVES for w in phrase.split()] + list(PEOPLE + QA5_PEOPLE + PLACES + OBJECTS)


def documents(n, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(40, 160)))) + "." for _ in range(n)]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("longctx-corpus")
    prepare([TextDomain("plain", "test:plain", documents(60, 0)), TextDomain("more", "test:more", documents(30, 1))],
            out, vocab_size=600, val_fraction=0.5, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def background(corpus):
    return Background.from_corpus(corpus)
