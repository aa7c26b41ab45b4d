"""`python -m raftkv.server`: the same member process as `python -m raftkv`."""
import runpy

runpy.run_module("raftkv", run_name="__main__")
