"""medvlm application layer: settings, database, services, UI, batch jobs and the command line.

``app`` wires the core packages (``medvlm``, ``knowledge_graph``, ``data_prep``) for people.
Nothing imports ``app``.
"""
