"""Code that runs inside a sandboxed plugin worker (standard library only, plus pyseccomp)."""
