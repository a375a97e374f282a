"""Under TRITON_INTERPRET=1 (kernels run on the CPU through numpy), a fix to Triton's interpreter, applied on import."""

from __future__ import annotations

import os

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


def _fix_interpreter_scalar_index() -> None:
    """Triton 3.6's interpreter turns a scalar into a Python int with int(array of shape [1]), which numpy >= 2.4
    rejects, so any loop with a runtime bound fails (triton-lang/triton#9171). Re-patch it through .item()."""
    from triton.runtime import interpreter

    patch = interpreter._patch_lang_tensor
    if getattr(patch, "scalar_index_fixed", False):
        return

    def fixed(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    fixed.scalar_index_fixed = True
    interpreter._patch_lang_tensor = fixed


if INTERPRETING:
    _fix_interpreter_scalar_index()
