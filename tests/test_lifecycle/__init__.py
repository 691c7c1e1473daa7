"""
Tests for L{endpointkit.lifecycle}, one module per module of the package.
"""
