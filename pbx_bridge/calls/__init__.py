"""The call flow: inbound calls on tracked numbers forwarded, recorded and journaled over ARI.

`stasis.py` routes ARI events to calls, `flow.py` handles one call, `routing.py`
decides where a dialed number goes, and `journal.py` writes the call journal.
"""
