"""
What starts and drives nodes: the twistd tap modules, the C{zmqrelay}
command, the demo, the example application and the process launcher used by
the demo, the tests and the benchmarks.  Imports from every other layer;
nothing imports from here.
"""
