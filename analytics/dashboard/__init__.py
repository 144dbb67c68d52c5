"""The engagement dashboard: the analysis views as a page in a browser."""
