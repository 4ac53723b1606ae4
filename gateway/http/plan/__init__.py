"""Compiled execution plans (issue 14): a validated operation compiled once per (schema,
document, operation) into nested closures that resolve the selection without graphql-core's
generic per-field machinery, as graphql-jit does for graphql-js.

What stays graphql-core's, so answers match it exactly: the executor built per request
(`Executor.build`: operation choice, variable coercion and its errors), field collection
(`collect_fields`/`collect_subfields`: fragments, merging, @skip/@include, in graphql-core's
order), argument coercion (`get_argument_values`), resolve info (the executor class's
`build_resolve_info`, so strawberry's resolvers see what they always see), leaf serialisation
(the executor class's `complete_leaf_value`: plugin fields' `PreSerialized` leaves pass through
as with `PluginAwareExecutor`), `located_error`, runtime type checks and the error collector.
What the plan saves: looking up each field's definition and resolver, collecting sub-fields,
and the dispatch on the return type, per field and per list item; and a strawberry field with
no resolver, permission or extension is read as an attribute without building an info object.

Collection depends on the variables only through @skip/@include, so an operation compiles
once per combination of the values of the variables those directives read (usually one).

Not compiled (`compile_plan` or `Plan.execute` answers None and graphql-core runs, exactly as
before): subscriptions; introspection (`__schema`, `__type`); any resolver that is async (a
coroutine function, or a strawberry field marked async); operation directives (e.g. disabling
error propagation); fragment variables; a schema with @defer/@stream. Execution is depth-first
and synchronous like graphql-core's for sync resolvers, so errors are collected in the same
order, null propagates to the same nullable parent, and a non-null field's error stops its
later siblings the same way.

A strawberry field with a resolver is called without strawberry's per-call wrapper when the
wrapper would only call the function (no field extension or permission, no exception handler
for it, sync): the function gets the converted arguments and an `Info` only if it takes one
(direct.py); strawberry enums are serialised by a look-up instead of strawberry's loop.

compiler.py compiles and runs plans; direct.py calls strawberry's resolvers directly; verify.py
checks a plan's answer against graphql-core's (ALPHINTRA_EXECUTION=verify, which the test
suite runs with).
"""

from gateway.http.plan.compiler import MAX_VARIANTS, AwaitableResult, Plan, Unsupported, compile_plan
from gateway.http.plan.verify import PlanMismatch, Verification, plan_difference, verification, verify

__all__ = ["MAX_VARIANTS", "AwaitableResult", "Plan", "PlanMismatch", "Unsupported", "Verification",
           "compile_plan", "plan_difference", "verification", "verify"]
