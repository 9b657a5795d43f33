"""The HTTP server: health, and the APIs that each capability adds."""
