"""Alphintra gateway: the runtime and the domain services behind the GraphQL surface.

Nothing here imports `schema` except the composition root (`gateway.app`), which assembles
the HTTP application from a schema it is handed.
"""
