from .fixtures import fake_asterisk  # noqa: F401  (the fixture of this folder's tests)
