"""AGREE training (arXiv 2511.13415): a multimodal LLM's query-to-image attention as patch-level
supervision for a late-interaction retriever, added to the page-level contrastive loss.

The modules follow the data flow:
- data.py:       (query, page) pairs from a BEIR/ViDoRe-style folder or a JSONL file
- teacher.py:    the teacher's attention map of a pair on its own image grid
- downsample.py: that map pooled onto the retriever's patch grid
- annotate.py:   maps for a whole data set, one file per pair, resumable
- losses.py:     the global (MaxSim pairwise) and local (map agreement) losses
- train.py:      LoRA training from a TOML/YAML config, with checkpoints and resume
- report.py:     the grounding metric: do the retriever's maps agree with the teacher's?
"""
