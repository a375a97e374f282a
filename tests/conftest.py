"""Session-wide setup, read by pytest before any test module is imported.

Without CUDA the Triton kernels run under Triton's interpreter, which must be switched on before triton is first
imported (it decides then how its own jit functions run). `import mta` imports triton when transformers is
installed (registering the Auto classes imports transformers' modeling code, which imports torch._dynamo and with
it triton), and any test module may import mta first, so the switch is set here. The triton test modules set it
as well, for running them alone.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
