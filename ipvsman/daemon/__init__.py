"""ipvsmand: the health-checking daemon that holds IPVS to a topology file (see main.py)."""
