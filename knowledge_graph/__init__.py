"""knowledge_graph: a curated radiology and pathology knowledge graph and a cited-fact retriever."""
