"""Several directors watched together: their agents, their transport and the comparison of their snapshots."""
