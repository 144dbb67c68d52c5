"""Configuration files in TOML, read into pydantic models with clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from engagement.errors import ConfigurationError

Model = TypeVar("Model", bound=BaseModel)


def load_toml(path: Path, model: type[Model], what: str) -> Model:
    """``path`` parsed as ``model``; ``what`` names the file in errors.

    Errors name the file and the places that are wrong, never the values
    (a file of secrets must not end up in a log).
    """
    try:
        return model.model_validate(tomllib.loads(path.read_text()))
    except OSError as error:
        raise ConfigurationError(
            f"Cannot read {what} {path}: {error.strerror}"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(
            f"{what.capitalize()} {path} is not valid TOML: {error}"
        ) from None
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or 'the file'}: {item['msg']}"
            for item in error.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(
            f"{what.capitalize()} {path} has unexpected content ({problems})"
        ) from None
