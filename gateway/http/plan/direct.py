"""Strawberry resolvers called without strawberry's per-call wrapper, and strawberry enums
serialised by a look-up (issue 14).

For a field with a resolver, strawberry's `GraphQLCoreConverter.from_resolver` gives graphql-core
`_resolver(source, info, **kwargs)`, which per call builds strawberry's `Info`, converts the
arguments (`get_arguments`: input types, enums, the `self`/`root`/`parent`/`info` parameters),
folds the field's extensions (`reduce` over partials, even when there are none) and goes
through `field.get_result` and `StrawberryResolver.__call__` to the function. For a field with
no field extension (permission classes are one), no exception handler that can apply to it and
a sync resolver of strawberry's own class, that is the same as calling the function with the
converted arguments, which is what `direct_call` returns: the `Info` is built only when the
function takes one or the field has arguments (their conversion may need it), and the
graphql-core resolve info under it only when the function reads it (`_lazy_info_class`: the
jobs page's `createdBy` returns the joined creator without ever looking).

Everything is read from the wrapper strawberry built for the field (its closure), so the call
made here is the one the wrapper would make; any other shape (another strawberry version's
wrapper, a resolver that is not strawberry's) answers None and the plan calls the wrapper.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cached_property
from typing import Any

from strawberry.schema.schema_converter import CustomGraphQLEnumType
from strawberry.types.arguments import convert_arguments
from strawberry.types.field import StrawberryField
from strawberry.types.fields.resolver import StrawberryResolver

# (source, a maker of graphql-core's resolve info, the field's raw arguments or None) -> value
DirectCall = Callable[[Any, Callable[[], Any], dict[str, Any] | None], Any]
_WRAPPER = "GraphQLCoreConverter.from_resolver.<locals>._resolver"
_WRAPPER_MODULE = "strawberry.schema.schema_converter"


def _cells(function: Any) -> dict[str, Any] | None:
    code, closure = getattr(function, "__code__", None), getattr(function, "__closure__", None)
    if code is None or closure is None:
        return None
    try:
        return {name: cell.cell_contents for name, cell in zip(code.co_freevars, closure, strict=True)}
    except ValueError:  # an empty cell
        return None


def direct_call(resolve: Any) -> tuple[DirectCall, bool] | None:
    """The field's resolver function called as strawberry's wrapper `resolve` would call it,
    and whether it needs graphql-core's resolve info; None when `resolve` is not a wrapper this
    can stand in for."""
    if (getattr(resolve, "__qualname__", None) != _WRAPPER
            or getattr(resolve, "__module__", None) != _WRAPPER_MODULE):
        return None
    cells = _cells(resolve)
    if cells is None or cells.get("field_exception_handlers") != ():
        return None
    wrapper_info, chain = cells.get("_strawberry_info_from_graphql"), cells.get("_get_result_with_extensions")
    info_cells, chain_cells = _cells(wrapper_info), _cells(chain)
    if info_cells is None or chain_cells is None or chain_cells.get("extension_functions") != []:
        return None
    field, converter = info_cells.get("field"), info_cells.get("self")
    if field is None or converter is None or chain_cells.get("field") is not field:
        return None
    resolver = field.base_resolver
    # A field class of its own may do more in `get_result` than call the resolver
    if (field.extensions or field.is_async or type(resolver) is not StrawberryResolver
            or type(field).get_result is not StrawberryField.get_result
            or not callable(resolver.wrapped_func)):
        return None
    function = resolver.wrapped_func
    config, scalars = converter.config, converter.scalar_registry
    lazy = _lazy_info_class(converter.config.info_class)
    if lazy is None:
        return None

    def make_info(raw_info: Callable[[], Any]) -> Any:
        info = object.__new__(lazy)  # as `info_class(_raw_info=..., _field=field)`, lazily
        info.__dict__.update(_field=field, _make_raw_info=raw_info)
        return info

    arguments = field.arguments
    self_arg = resolver.self_parameter is not None
    sources = tuple(p.name for p in (resolver.parent_parameter, resolver.root_parameter) if p is not None)
    info_name = resolver.info_parameter.name if resolver.info_parameter is not None else None
    needs_info = info_name is not None or bool(arguments)

    if not arguments and not sources and info_name is None:
        if self_arg:
            def call_self(source: Any, info: Any, args: dict[str, Any] | None) -> Any:
                return function(source)
            return call_self, False

        def call_bare(source: Any, info: Any, args: dict[str, Any] | None) -> Any:
            return function()
        return call_bare, False

    if not arguments and not sources and self_arg and info_name is not None:
        name: str = info_name

        def call_self_info(source: Any, info: Any, args: dict[str, Any] | None) -> Any:
            return function(source, **{name: make_info(info)})
        return call_self_info, True

    def call(source: Any, info: Any, args: dict[str, Any] | None) -> Any:
        strawberry_info = make_info(info) if needs_info else None
        kwargs = convert_arguments(args or {}, arguments, scalar_registry=scalars, config=config,
                                   info=strawberry_info) if arguments else {}
        for name in sources:
            kwargs[name] = source
        if info_name is not None:
            kwargs[info_name] = strawberry_info
        return function(source, **kwargs) if self_arg else function(**kwargs)
    return call, needs_info


def _lazy_info_class(info_class: Any) -> type | None:
    """`info_class` (strawberry's `Info`, or the schema's own subclass) whose `_raw_info`, the
    graphql-core resolve info every property reads, is made on first use; None for a class
    this cannot wrap that way (slots, or an `_raw_info` of its own)."""
    if (not dataclasses.is_dataclass(info_class) or "__slots__" in vars(info_class)
            or hasattr(info_class, "_raw_info")):
        return None
    return _LAZY.get(info_class) or _LAZY.setdefault(info_class, type(
        f"Lazy{info_class.__name__}", (info_class,), {"_raw_info": cached_property(_made_raw_info),
                                                    "__doc__": info_class.__doc__}))


def _made_raw_info(self: Any) -> Any:
    # Read, not popped: from Python 3.12 cached_property has no lock, and two threads reading
    # one `Info` at once may both get here (the second pop would raise KeyError).
    return self.__dict__["_make_raw_info"]()


_LAZY: dict[type, type] = {}


def enum_output(type_: Any) -> Callable[[Any], Any] | None:
    """`type_.coerce_output_value` for a strawberry enum, by one dictionary look-up per member:
    strawberry's compares the member's value with each GraphQL value in turn (two enum property
    reads each). Same names, first match winning as in its loop; anything that is not a member
    found here (another value, a member with no GraphQL value) goes to strawberry's own. None
    for any other type."""
    if type(type_) is not CustomGraphQLEnumType:
        return None
    names: dict[Any, str] = {}
    for member in type_.wrapped_cls:
        for name, value in type_.values.items():
            if member.value == value.value:
                names[member] = name
                break
    own = type_.coerce_output_value

    def coerce(value: Any) -> Any:
        try:
            return names[value]
        except (KeyError, TypeError):  # not a member (or unhashable): strawberry's answer
            return own(value)
    return coerce
