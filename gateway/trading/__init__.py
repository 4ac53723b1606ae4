"""Orders and execution (issue 4). No GraphQL types here.

routing   exchange connectors collected from plugins, and smart order routing over them
"""
