"""The compiler and executor of plans (the package's docstring says what and why)."""


from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

from graphql import (
    DirectiveNode,
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLAbstractType,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    Undefined,
    VariableNode,
    Visitor,
    get_argument_values,
    is_abstract_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
    located_error,
    visit,
)
from graphql.execution.collect_fields import FieldDetails, collect_fields, collect_subfields
from graphql.execution.executor import Executor, invalid_return_type_error
from graphql.pyutils import Path, is_iterable
from graphql.pyutils import inspect as gql_inspect

from gateway.http.plan.direct import DirectCall, direct_call, enum_output

log = logging.getLogger("gateway.http.plan")

# (value, path, the field's path, the field's info or None, the run) -> completed value
Completer = Callable[[Any, Path, Path, Any, "_Run"], Any]
_BASE_LEAF = Executor.complete_leaf_value
_INTROSPECTION = frozenset({"__schema", "__type"})
MAX_VARIANTS = 16  # compiled @skip/@include combinations kept per plan; beyond, graphql-core


class Unsupported(Exception):
    """The compiler does not handle this operation: graphql-core runs it."""


class AwaitableResult(TypeError):
    """A resolver answered an awaitable on the synchronous path (never expected: async
    resolvers are not compiled)."""


@dataclass(slots=True)
class _Run:
    """One execution's state: the graphql-core executor built for it (variables, info, the
    error collector)."""

    executor: Executor
    errors: Any
    variables: Any
    hide_suggestions: bool


class _Field:
    """One response key of a selection set, compiled."""

    __slots__ = ("args", "attr", "coerce", "complete", "direct", "field_def", "key", "leaf_type", "name",
                 "needs_info", "nodes", "non_null", "null_message", "parent_name", "parent_type", "resolve",
                 "typename")

    def __init__(self, key: str, parent_type: GraphQLObjectType, field_def: GraphQLField,
                 nodes: list[FieldNode]) -> None:
        self.key = key
        self.parent_type = parent_type
        self.parent_name = parent_type.name
        self.field_def = field_def
        self.nodes = nodes
        self.name = nodes[0].name.value
        self.non_null = is_non_null_type(field_def.type)
        self.typename: str | None = None  # `__typename`: the parent's name, nothing to resolve
        self.attr: str | None = None  # a plain strawberry attribute: read directly
        self.resolve: Callable[..., Any] | None = None
        # A strawberry resolver's function called without strawberry's wrapper (direct.py)
        self.direct: DirectCall | None = None
        self.needs_info = True
        self.args = bool(field_def.args or nodes[0].arguments)
        self.complete: Completer = _identity
        # An attribute whose type is a (non-null) scalar or enum: completed inline, with no
        # Path made unless it fails (most fields of a page).
        self.coerce: Callable[[Any], Any] | None = None
        self.leaf_type: Any = None
        self.null_message = f"Cannot return null for non-nullable field {self.parent_name}.{self.name}."


def _identity(value: Any, *_: Any) -> Any:
    return value


@dataclass
class Plan:
    """The plan of one operation of one document for one schema: its root selection compiled
    per combination of the @skip/@include variables' values (None: that one does not compile)."""

    schema: GraphQLSchema
    document: DocumentNode
    operation: OperationDefinitionNode
    executor_class: type[Executor]
    switches: tuple[str, ...]  # variables @skip/@include read, in document order
    direct: bool = True  # call strawberry resolvers' functions without their wrapper (direct.py)
    _variants: dict[tuple[Any, ...], tuple[_Field, ...] | None] = field(default_factory=dict)
    _lock: Lock = field(default_factory=Lock)

    def execute(self, context: Any, variable_values: dict[str, Any] | None,
                max_coercion_errors: int, hide_suggestions: bool,
                is_awaitable: Callable[[Any], bool] | None = None) -> ExecutionResult | None:
        """The operation's result, as graphql-core's `execute` would answer it; None when this
        request's variant does not compile (run graphql-core instead: nothing has run yet)."""
        name = self.operation.name.value if self.operation.name else None
        executor = self.executor_class.build(
            self.schema, self.document, None, context, variable_values, name,
            max_coercion_errors=max_coercion_errors, hide_suggestions=hide_suggestions,
            is_awaitable=is_awaitable)
        if isinstance(executor, list):  # variables that do not coerce: a request error
            return ExecutionResult(None, errors=executor)
        coerced = executor.variable_values.coerced
        key = tuple(coerced.get(v, Undefined) for v in self.switches)
        try:
            fields = self._variants[key]
        except KeyError:
            fields = self._compile_variant(key, executor, hide_suggestions)
        if fields is None:
            return None
        run = _Run(executor, executor.collected_errors, executor.variable_values, hide_suggestions)
        try:
            data: dict[str, Any] | None = _execute_fields(fields, None, None, run)
        except GraphQLError as error:  # a non-null root field failed: the whole data is null
            run.errors.add(error, None)
            data = None
        return ExecutionResult(data, run.errors.errors or None)

    def _compile_variant(self, key: tuple[Any, ...], executor: Executor,
                         hide_suggestions: bool) -> tuple[_Field, ...] | None:
        with self._lock:
            if key in self._variants:
                return self._variants[key]
            if len(self._variants) >= MAX_VARIANTS:  # a client cycling @skip/@include values
                return None
            try:
                fields = _Compiler(self.schema, executor, self.executor_class,
                                   hide_suggestions, self.direct).root(self.operation)
            except Unsupported as why:
                log.debug("not compiled: %s", why)
                fields = None
            except RecursionError:  # absurdly deep: graphql-core answers it its own way
                fields = None
            except GraphQLError as why:
                # The client's input, not a compiler bug: e.g. null sent for a defaulted
                # variable that @skip(if:) reads. graphql-core answers it as a field error
                # where it collects that sub-selection (if it gets there at all).
                log.debug("not compiled: %s", why.message)
                fields = None
            except Exception:  # a compiler bug must not fail the request: graphql-core runs it
                log.exception("compiling an execution plan failed")
                fields = None
            self._variants[key] = fields
            return fields


def compile_plan(schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode,
                 executor_class: type[Executor] | None, direct: bool = True) -> Plan | None:
    """A plan for `operation` (of the validated `document`), or None when graphql-core must
    run it (see the module's docstring). Fields are compiled on the first request, when the
    variables that @skip/@include read are known."""
    if operation.operation not in (OperationType.QUERY, OperationType.MUTATION):
        return None
    if schema.get_root_type(operation.operation) is None:
        return None
    if operation.directives:
        return None
    if schema.get_directive("defer") or schema.get_directive("stream"):
        return None
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode) and definition.variable_definitions:
            return None
    scan = _Scan()
    visit(document, scan)
    if scan.introspection:
        return None
    return Plan(schema, document, operation, executor_class or Executor, tuple(scan.switches), direct)


class _Scan(Visitor):
    """Introspection fields, and the variables that @skip/@include read."""

    def __init__(self) -> None:
        super().__init__()
        self.introspection = False
        self.switches: list[str] = []

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        if node.name.value in _INTROSPECTION:
            self.introspection = True

    def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
        if node.name.value in ("skip", "include"):
            for argument in node.arguments or ():
                if isinstance(argument.value, VariableNode):
                    name = argument.value.name.value
                    if name not in self.switches:
                        self.switches.append(name)


def _execute_fields(fields: Sequence[_Field], source: Any, path: Path | None, run: _Run) -> dict[str, Any]:
    """graphql-core's execute_fields (and, for sync resolvers, execute_fields_serially)."""
    out: dict[str, Any] = {}
    for f in fields:
        coerce = f.coerce
        if coerce is not None:
            # complete_value for an attribute of a (non-null) leaf type, in graphql-core's order
            try:
                value = getattr(source, f.attr)  # type: ignore[arg-type]
                if isinstance(value, Exception):
                    raise value
                if value is None or value is Undefined:
                    if f.non_null:
                        raise TypeError(f.null_message)
                    out[f.key] = None
                    continue
                coerced = coerce(value)
                if coerced is Undefined or coerced is None:
                    raise TypeError(_leaf_message(f.leaf_type, value, coerced))
                out[f.key] = coerced
                continue
            except Exception as raw:
                fpath = Path(path, f.key, f.parent_name)
                error = located_error(raw, f.nodes, fpath.as_list())
                if f.non_null:
                    raise error from None
                run.errors.add(error, fpath)
                out[f.key] = None
                continue
        fpath = Path(path, f.key, f.parent_name)
        if f.typename is not None:
            out[f.key] = f.typename
            continue
        info = None
        try:
            if f.attr is not None:
                value = getattr(source, f.attr)
            elif f.direct is not None:
                value = f.direct(source, _InfoMaker(run.executor, f, fpath) if f.needs_info else None,
                                 get_argument_values(f.field_def, f.nodes[0], run.variables, None,
                                                     run.hide_suggestions) if f.args else None)
                if run.executor.is_awaitable(value):
                    if inspect.iscoroutine(value):
                        value.close()
                    raise AwaitableResult(
                        f"{f.parent_name}.{f.name} answered an awaitable on the synchronous path")
            else:
                info = run.executor.build_resolve_info(f.field_def, f.nodes, f.parent_type, fpath)
                if f.args:
                    args = get_argument_values(f.field_def, f.nodes[0], run.variables, None,
                                               run.hide_suggestions)
                    value = f.resolve(source, info, **args)  # type: ignore[misc]
                else:
                    value = f.resolve(source, info)  # type: ignore[misc]
                if run.executor.is_awaitable(value):
                    if inspect.iscoroutine(value):
                        value.close()
                    raise AwaitableResult(
                        f"{f.parent_name}.{f.name} answered an awaitable on the synchronous path")
            completed = f.complete(value, fpath, fpath, info, run)
            if completed is None and f.non_null:  # the non-null wrapper, inline
                raise TypeError(f.null_message)
            out[f.key] = completed
        except Exception as raw:
            error = located_error(raw, f.nodes, fpath.as_list())
            if f.non_null:
                raise error from None
            run.errors.add(error, fpath)
            out[f.key] = None
    return out


class _InfoMaker:
    """graphql-core's resolve info for one field, made when called (direct.py's lazy `Info`)."""

    __slots__ = ("executor", "f", "path")

    def __init__(self, executor: Executor, f: _Field, path: Path) -> None:
        self.executor, self.f, self.path = executor, f, path

    def __call__(self) -> Any:
        f = self.f
        return self.executor.build_resolve_info(f.field_def, f.nodes, f.parent_type, self.path)


def _leaf_message(type_: Any, value: Any, coerced: Any) -> str:
    return (f"Expected `{gql_inspect(type_)}.coerce_output_value({gql_inspect(value)})` to return"
            f" non-nullable value, returned: {gql_inspect(coerced)}")


class _Compiler:
    def __init__(self, schema: GraphQLSchema, executor: Executor, executor_class: type[Executor],
                 hide_suggestions: bool, direct: bool = True) -> None:
        self.schema = schema
        self.direct = direct
        self.executor = executor
        self.hide_suggestions = hide_suggestions
        leaf = executor_class.complete_leaf_value
        self.leaf = None if leaf is _BASE_LEAF else leaf  # a subclass's own leaf completion
        self.type_resolver = executor.type_resolver
        self.field_resolver = executor.field_resolver

    def root(self, operation: OperationDefinitionNode) -> tuple[_Field, ...]:
        root_type = self.schema.get_root_type(operation.operation)
        assert root_type is not None  # checked by compile_plan
        collected = collect_fields(self.schema, self.executor.fragments, self.executor.variable_values,
                                   root_type, operation, self.hide_suggestions)
        return self.fields(root_type, collected)

    def fields(self, parent_type: GraphQLObjectType, collected: Any) -> tuple[_Field, ...]:
        grouped, defer_usages, _forbidden = collected
        if defer_usages:
            raise Unsupported("@defer")
        out = []
        for key, details in grouped.items():
            compiled = self.field(parent_type, key, details)
            if compiled is not None:
                out.append(compiled)
        return tuple(out)

    def field(self, parent_type: GraphQLObjectType, key: str,
              details: list[FieldDetails]) -> _Field | None:
        nodes = [d.node for d in details]
        name = nodes[0].name.value
        if any(d.fragment_variable_values is not None for d in details):
            raise Unsupported("fragment variables")
        if name in _INTROSPECTION:
            raise Unsupported("introspection")
        field_def = self.schema.get_field(parent_type, name)
        if field_def is None:
            return None  # graphql-core leaves it out of the answer
        f = _Field(key, parent_type, field_def, nodes)
        if name == "__typename":
            f.typename = parent_type.name
            return f
        resolve = field_def.resolve or self.field_resolver
        definition = (field_def.extensions or {}).get("strawberry-definition")
        if definition is not None and getattr(definition, "is_async", False):
            raise Unsupported(f"{parent_type.name}.{name} is async")
        if inspect.iscoroutinefunction(resolve) or inspect.isasyncgenfunction(resolve):
            raise Unsupported(f"{parent_type.name}.{name} is async")
        if (definition is not None and getattr(resolve, "__name__", "") == "_get_basic_result"
                and getattr(definition, "is_basic_field", False)
                and getattr(definition, "default_resolver", None) is getattr):
            # strawberry's resolver for such a field is getattr(source, python_name) (its
            # schema_converter.from_resolver, `_get_basic_result`): read it here.
            f.attr = definition.python_name
        else:
            f.resolve = resolve
            found = direct_call(resolve) if self.direct else None
            if found is not None:
                f.direct, f.needs_info = found
        # A field's own non-null check is made by _execute_fields; list items keep theirs.
        leaf_type = field_def.type.of_type if f.non_null else field_def.type
        f.complete = self.completer(leaf_type, f, details)
        if f.attr is not None and self.leaf is None and is_leaf_type(leaf_type):
            f.coerce, f.leaf_type = self.coerce_output(leaf_type), leaf_type
        return f

    def completer(self, type_: GraphQLOutputType, f: _Field, details: list[FieldDetails]) -> Completer:
        """graphql-core's complete_value for `type_`, specialised."""
        if is_non_null_type(type_):
            return self._non_null(type_, f, details)
        if is_list_type(type_):
            return self._list(type_, f, details)
        if is_leaf_type(type_):
            return self._leaf(type_, f)
        if is_abstract_type(type_):
            return self._abstract(type_, f, details)
        if is_object_type(type_):
            return self._object(type_, f, details)
        raise Unsupported(f"output type {type_}")

    def _non_null(self, type_: GraphQLNonNull, f: _Field, details: list[FieldDetails]) -> Completer:
        inner = self.completer(type_.of_type, f, details)
        message = f"Cannot return null for non-nullable field {f.parent_name}.{f.name}."

        def complete_non_null(value: Any, path: Path, fpath: Path, info: Any, run: _Run) -> Any:
            if isinstance(value, Exception):
                raise value
            completed = inner(value, path, fpath, info, run)
            if completed is None:
                raise TypeError(message)
            return completed
        return complete_non_null

    def _list(self, type_: GraphQLList, f: _Field, details: list[FieldDetails]) -> Completer:
        item_type = type_.of_type
        inner = self.completer(item_type, f, details)
        item_non_null = is_non_null_type(item_type)
        nodes = f.nodes
        message = f"Expected Iterable, but did not find one for field '{f.parent_name}.{f.name}'."

        def complete_list(value: Any, path: Path, fpath: Path, info: Any, run: _Run) -> Any:
            if isinstance(value, Exception):
                raise value
            if value is None or value is Undefined:
                return None
            if not is_iterable(value):
                raise GraphQLError(message)
            out = []
            append = out.append
            for index, item in enumerate(value):
                item_path = Path(path, index, None)
                try:
                    append(inner(item, item_path, fpath, info, run))
                except Exception as raw:
                    error = located_error(raw, nodes, item_path.as_list())
                    if item_non_null:
                        raise error from None
                    run.errors.add(error, item_path)
                    append(None)
            return out
        return complete_list

    def _leaf(self, type_: Any, f: _Field) -> Completer:
        own = self.leaf
        if own is not None:
            def complete_own_leaf(value: Any, path: Path, fpath: Path, info: Any, run: _Run) -> Any:
                if isinstance(value, Exception):
                    raise value
                if value is None or value is Undefined:
                    return None
                return own(type_, value)
            return complete_own_leaf
        coerce = self.coerce_output(type_)

        def complete_leaf(value: Any, path: Path, fpath: Path, info: Any, run: _Run) -> Any:
            if isinstance(value, Exception):
                raise value
            if value is None or value is Undefined:
                return None
            coerced = coerce(value)
            if coerced is Undefined or coerced is None:
                raise TypeError(_leaf_message(type_, value, coerced))
            return coerced
        return complete_leaf

    def coerce_output(self, type_: Any) -> Callable[[Any], Any]:
        """The leaf type's output coercion (a strawberry enum's by a look-up: direct.py)."""
        fast = enum_output(type_) if self.direct else None
        return fast if fast is not None else type_.coerce_output_value

    def _subfields(self, type_: GraphQLObjectType, details: list[FieldDetails]) -> tuple[_Field, ...]:
        collected = collect_subfields(self.schema, self.executor.fragments, self.executor.variable_values,
                                      self.executor.operation, type_, details, self.hide_suggestions)
        return self.fields(type_, collected)

    def _object(self, type_: GraphQLObjectType, f: _Field, details: list[FieldDetails]) -> Completer:
        fields = self._subfields(type_, details)
        is_type_of = type_.is_type_of
        if is_type_of is not None and inspect.iscoroutinefunction(is_type_of):
            raise Unsupported(f"{type_.name}.is_type_of is async")

        def complete_object(value: Any, path: Path, fpath: Path, info: Any, run: _Run) -> Any:
            if isinstance(value, Exception):
                raise value
            if value is None or value is Undefined:
                return None
            if is_type_of is not None:
                if info is None:
                    info = run.executor.build_resolve_info(f.field_def, f.nodes, f.parent_type, fpath)
                if not is_type_of(value, info):
                    raise invalid_return_type_error(type_, value, details)
            return _execute_fields(fields, value, path, run)
        return complete_object

    def _abstract(self, type_: GraphQLAbstractType, f: _Field, details: list[FieldDetails]) -> Completer:
        resolve_type = type_.resolve_type or self.type_resolver
        if inspect.iscoroutinefunction(resolve_type):
            raise Unsupported(f"{type_.name}.resolve_type is async")
        # Every possible type compiled now, so an async resolver anywhere below is found here.
        by_type = {t.name: self._object(t, f, details) for t in self.schema.get_possible_types(type_)}

        def complete_abstract(value: Any, path: Path, fpath: Path, info: Any, run: _Run) -> Any:
            if isinstance(value, Exception):
                raise value
            if value is None or value is Undefined:
                return None
            executor = run.executor
            if info is None:
                info = executor.build_resolve_info(f.field_def, f.nodes, f.parent_type, fpath)
            name = resolve_type(value, info, type_)
            if executor.is_awaitable(name):
                if inspect.iscoroutine(name):
                    name.close()
                raise AwaitableResult(f"{type_.name}.resolve_type answered an awaitable")
            runtime_type = executor.ensure_valid_runtime_type(name, type_, details, info, value)
            return by_type[runtime_type.name](value, path, fpath, info, run)
        return complete_abstract

