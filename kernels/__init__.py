"""MaxSim scoring kernels (imported as vdr.kernels).

Exact late-interaction scoring lives in the store for now: Qdrant reranks the first stage's
candidates by MaxSim. This package is where the Triton kernel (GPU) and the fastest exact CPU
path take over that rerank.
"""
