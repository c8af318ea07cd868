"""Knowledge base (知识库, seed 003): categories, articles with versions and review, Chinese search."""
