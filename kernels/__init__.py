"""MaxSim scoring kernels (imported as vdr.kernels).

maxsim_reference: plain torch, the ground truth. maxsim_triton: the Triton kernel for CUDA
tensors (or CPU tensors under TRITON_INTERPRET=1). Search still reranks with Qdrant's own
exact MaxSim; the CPU path and the GPU rerank stage that use these come next.
"""

from vdr.kernels.reference import maxsim_reference
from vdr.kernels.triton_maxsim import TopDocuments, maxsim_triton, top_documents

__all__ = ["TopDocuments", "maxsim_reference", "maxsim_triton", "top_documents"]
