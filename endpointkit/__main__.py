"""
C{python -m endpointkit}: the same as the C{endpointkit} command.
"""

from endpointkit.cli import run

if __name__ == "__main__":
    run()
