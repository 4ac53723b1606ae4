"""The HTTP and WebSocket surface: GraphQL transport, middleware, health and metrics routes."""
