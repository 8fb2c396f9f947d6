"""PDF folder -> pages -> embeddings -> store (imported as vdr.indexer); see pipeline.py."""
