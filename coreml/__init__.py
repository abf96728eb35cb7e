"""Core ML packaging of the RR model, and a numpy interpreter that runs saved packages on Linux.

The interpreter (``coreml.interpreter.load_package``) reads a ``.mlpackage`` from disk by itself, so what
we verify is exactly what ships; ``coreml.cost`` summarises a package's size and work.
"""
