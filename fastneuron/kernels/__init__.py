"""fastneuron's fused backends (installed as ``fastneuron.kernels``).

- :mod:`.compiled`: chunks of SGD steps fused by ``torch.compile`` (CPU and CUDA).
- :mod:`.triton_sgd`: one Triton kernel that runs every step in registers (CUDA, or
  the Triton interpreter on CPU). Imported lazily: Triton is optional.
"""
