"""Exceptions with messages meant for users."""


class VlexplainError(Exception):
    """Base class: a problem the user can fix; the CLI prints the message and exits with code 2."""


class InputError(VlexplainError, ValueError):
    """Bad input: a missing or corrupt image, empty text, a malformed data file."""


class ModelLoadError(VlexplainError):
    """A model spec that is unknown or cannot be loaded here."""


class MethodError(VlexplainError, ValueError):
    """An unknown method, a method that does not apply to a model, or a bad option."""


class MissingExtraError(VlexplainError, ImportError):
    """An optional dependency is not installed."""


def require(module: str, extra: str):
    """Import an optional dependency or raise a message naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"'{module}' is not installed; install it with: pip install 'vlexplain[{extra}]'"
        ) from e
