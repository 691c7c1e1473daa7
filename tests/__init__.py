"""
endpointkit's trial test suite.
"""
