"""Reading the SDK's JSON files with one-line errors that name the file and what it should have been."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from allinone.errors import BadInputError

__all__ = ["read_json"]


def read_json(path: str | Path, expected: str) -> Any:
    """Parse `path` as UTF-8 JSON; `expected` names the file kind for the error (e.g. 'a catalog (catalog.json)')."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file; expected {expected}") from None
    except json.JSONDecodeError as err:
        raise BadInputError(f"{path}: not valid JSON at line {err.lineno}: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"{path}: cannot read ({err.__class__.__name__}); expected a UTF-8 JSON file") from None
