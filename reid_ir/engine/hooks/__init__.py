"""Engine hooks, one per file; ``standard.py`` lists the hooks a run has, in run order."""
