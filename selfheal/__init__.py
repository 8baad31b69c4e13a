"""selfheal: event-sourced self-healing of vLLM serving configurations.

The public Python API is assembled here in the next step of the move.
"""
