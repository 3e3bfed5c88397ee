"""Weights the project knows (the manifest), where they live (the cache), and how they get there
(fetch, import), and turning a name or a file into a loaded base (resolve)."""
