"""The local vault's one error, apart from the vault so the CLI can catch it cheaply."""


class VaultError(Exception):
    """A vault operation that cannot be done; the message says why in one line."""
