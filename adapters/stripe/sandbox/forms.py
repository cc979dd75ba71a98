"""Request parameters: decoding Stripe's bracket notation (`a[b][0][c]=v`,
`expand[]=x`) into nested dicts and lists, and `Params`, a typed reader that
raises Stripe's parameter errors and rejects parameters nobody read, as Stripe
rejects unknown parameters."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from adapters.stripe.sandbox.errors import (
    JsonDict,
    invalid,
    missing_param,
    unknown_param,
)

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
MAX_LIST_INDEX = 1000
METADATA_MAX_KEYS = 50
# Far above any real amount, yet small enough that amounts stay ordinary integers.
MAX_DECIMAL = Decimal(10) ** 15


def decode(raw: str) -> JsonDict:
    pairs = parse_qsl(raw, keep_blank_values=True, errors="replace")
    return decode_pairs(pairs)


def decode_pairs(pairs: Iterable[tuple[str, str]]) -> JsonDict:
    root: JsonDict = {}
    for key, value in pairs:
        _insert(root, _split(key), value, key)
    result = _listify(root)
    assert isinstance(result, dict)
    return result


def _split(key: str) -> list[str]:
    match = _KEY.match(key)
    if not match:
        raise invalid(f"Invalid parameter name: {key!r}", param=key)
    return [match.group(1), *_SEGMENT.findall(match.group(2))]


def _insert(root: JsonDict, path: list[str], value: str, key: str) -> None:
    node = root
    for segment in path[:-1]:
        child = node.setdefault(_slot(node, segment), {})
        if not isinstance(child, dict):
            raise invalid(f"Invalid parameter: {key} mixes a value and nested values", param=key)
        node = child
    last = _slot(node, path[-1])
    if isinstance(node.get(last), dict):
        raise invalid(f"Invalid parameter: {key} mixes a value and nested values", param=key)
    node[last] = value


def _slot(node: JsonDict, segment: str) -> str:
    # `x[]` appends, as Rack-style encoders do; the SDK itself always sends `x[0]`.
    return str(len(node)) if segment == "" else segment


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    children = {k: _listify(v) for k, v in node.items()}
    if children and all(k.isdigit() and int(k) <= MAX_LIST_INDEX for k in children):
        return [children[k] for k in sorted(children, key=int)]
    return children


class Params:
    """Read access to one level of parameters. Every getter marks its key as
    read; `finish()` raises for keys nobody read, at any nesting depth."""

    def __init__(self, data: Mapping[str, Any], prefix: str = "") -> None:
        self._data = data
        self._prefix = prefix
        self._read: set[str] = set()
        self._children: list[Params] = []

    def name(self, key: str) -> str:
        return f"{self._prefix}[{key}]" if self._prefix else key

    def has(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str) -> Any:
        self._read.add(key)
        return self._data.get(key)

    def finish(self) -> None:
        for key in self._data:
            if key not in self._read and not (key == "expand" and not self._prefix):
                raise unknown_param(self.name(key))
        for child in self._children:
            child.finish()

    def _required(self, key: str, required: bool) -> Any:
        value = self.raw(key)
        if value is None and required:
            raise missing_param(self.name(key))
        return value

    def text(self, key: str, *, required: bool = False, max_length: int = 5000) -> str | None:
        value = self._required(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise invalid(
                f"Invalid string: {self.name(key)} must be a string", param=self.name(key)
            )
        if len(value) > max_length:
            raise invalid(
                f"Invalid string: {self.name(key)} must be at most {max_length} characters",
                param=self.name(key),
            )
        if required and value == "":
            raise invalid(
                f"You passed an empty string for '{self.name(key)}'. We assume empty values "
                "are an attempt to unset a parameter; however "
                f"'{self.name(key)}' cannot be unset.",
                param=self.name(key),
                code="parameter_invalid_empty",
            )
        return value

    def optional_text(self, key: str) -> tuple[bool, str | None]:
        """(given, value): an empty string unsets the field, so it reads as None."""
        if not self.has(key):
            self.raw(key)
            return False, None
        value = self.text(key)
        return True, value or None

    def integer(
        self,
        key: str,
        *,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value = self._required(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or not re.fullmatch(r"-?\d{1,18}", value):
            raise invalid(
                f"Invalid integer: {value}", param=self.name(key), code="parameter_invalid_integer"
            )
        number = int(value)
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise invalid(f"Invalid {self.name(key)}: must be {bounds}", param=self.name(key))
        return number

    def boolean(self, key: str) -> bool | None:
        value = self.raw(key)
        if value is None:
            return None
        if value not in ("true", "false"):
            raise invalid(f"Invalid boolean: {value}", param=self.name(key))
        return bool(value == "true")

    def decimal(self, key: str, *, required: bool = False, max_places: int = 12) -> Decimal | None:
        value = self._required(key, required)
        if value is None:
            return None
        try:
            number = Decimal(value) if isinstance(value, str) else None
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite() or abs(number) >= MAX_DECIMAL:
            raise invalid(f"Invalid decimal: {value}", param=self.name(key))
        exponent = number.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > max_places:
            raise invalid(
                f"Invalid decimal: {value} has more than {max_places} decimal places",
                param=self.name(key),
            )
        return number

    def choice(self, key: str, options: tuple[str, ...], *, required: bool = False) -> str | None:
        value = self.text(key, required=required)
        if value is None:
            return None
        if value not in options:
            raise invalid(
                f"Invalid {self.name(key)}: must be one of {', '.join(options)}",
                param=self.name(key),
            )
        return value

    def nested(self, key: str, *, required: bool = False) -> Params | None:
        value = self._required(key, required)
        if value is None or value == "":
            return None
        if not isinstance(value, dict):
            raise invalid(f"Invalid object: {self.name(key)} must be a hash", param=self.name(key))
        child = Params(value, self.name(key))
        self._children.append(child)
        return child

    def nested_list(self, key: str, *, required: bool = False) -> list[Params] | None:
        value = self._required(key, required)
        if value is None or value == "":
            return None if value is None else []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise invalid(
                f"Invalid array: {self.name(key)} must be an array of hashes", param=self.name(key)
            )
        children = [Params(v, f"{self.name(key)}[{i}]") for i, v in enumerate(value)]
        self._children.extend(children)
        return children

    def free_form(self) -> dict[str, str]:
        """Every key, as strings: for payloads whose keys the caller chooses."""
        self._read.update(self._data)
        if not all(isinstance(v, str) for v in self._data.values()):
            raise invalid(f"Invalid {self._prefix}: values must be strings", param=self._prefix)
        return dict(self._data)

    def strings(self, key: str) -> list[str] | None:
        """A list of strings; the empty string clears the list."""
        value = self.raw(key)
        if value is None:
            return None
        if value == "":
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise invalid(
                f"Invalid array: {self.name(key)} must be an array of strings", param=self.name(key)
            )
        return list(value)

    def metadata(self, key: str = "metadata") -> dict[str, str | None] | None:
        """Metadata updates: a key set to "" maps to None (remove it); the whole field
        set to "" reads as an empty dict (clear everything)."""
        value = self.raw(key)
        if value is None:
            return None
        if value == "":
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise invalid("Invalid metadata: values must be strings", param=self.name(key))
        if len(value) > METADATA_MAX_KEYS:
            raise invalid("Invalid metadata: at most 50 keys", param=self.name(key))
        for k, v in value.items():
            if len(k) > 40 or len(v) > 500:
                raise invalid(
                    "Invalid metadata: keys are at most 40 characters, values at most 500",
                    param=f"{self.name(key)}[{k}]",
                )
        return {k: (v if v != "" else None) for k, v in value.items()}


def apply_metadata(current: dict[str, str], update: dict[str, str | None] | None) -> dict[str, str]:
    if update is None:
        return current
    if not update:
        return {}
    merged = dict(current)
    for k, v in update.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    return merged


def expand_paths(params: Mapping[str, Any]) -> list[str]:
    value = params.get("expand")
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid("Invalid array: expand must be an array of strings", param="expand")
    return list(value)
