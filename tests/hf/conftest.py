"""The transformers integration's tests need transformers 5.x (the [hf] extra); without it they are skipped."""

import pytest

from mta.models.hf_support import transformers_supported

if not transformers_supported():
    pytest.skip("transformers 5.x is not installed (pip install 'mta[hf]')", allow_module_level=True)
