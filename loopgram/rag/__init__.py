"""The knowledge base: documents cut into chunks, embedded, stored in Qdrant, retrieved
(dense + sparse, fused, reranked) and cited in answers."""
