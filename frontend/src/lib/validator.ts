// A JSON Schema validator for @rjsf forms that never compiles code: @rjsf's own ajv8 validator
// builds functions at run time (new Function), which the console's Content-Security-Policy
// (script-src 'self', no 'unsafe-eval') forbids. @cfworker/json-schema interprets the schema.
import { Validator, type OutputUnit, type Schema } from "@cfworker/json-schema";
import {
  createErrorHandler, toErrorSchema, unwrapErrorHandler, validationDataMerge,
  type CustomValidator, type ErrorTransformer, type RJSFSchema, type RJSFValidationError, type UiSchema,
  type ValidationData, type ValidatorType,
} from "@rjsf/utils";

// Keywords that only say "something inside failed": their inner errors are reported instead.
const AGGREGATE = new Set(["properties", "items", "prefixItems", "allOf", "$ref", "additionalItems",
  "unevaluatedProperties", "unevaluatedItems", "dependentSchemas", "if", "then", "else"]);

function validate(schema: RJSFSchema, data: unknown, root?: RJSFSchema): OutputUnit[] {
  const full = root && root !== schema
    ? { ...schema, definitions: root.definitions, $defs: (root as Record<string, unknown>).$defs }
    : schema;
  return new Validator(full as Schema, "7", false).validate(data ?? {}).errors;
}

/** A pointer (#/a/0/b) as rjsf's property path (.a.0.b). */
function property(instanceLocation: string): string {
  const parts = instanceLocation.replace(/^#\/?/, "").split("/").filter(Boolean)
    .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  return parts.length ? `.${parts.join(".")}` : "";
}

export function toRjsfErrors(units: OutputUnit[]): RJSFValidationError[] {
  const errors: RJSFValidationError[] = [];
  for (const unit of units) {
    if (AGGREGATE.has(unit.keyword)) continue;
    let path = property(unit.instanceLocation);
    let message = unit.error;
    const missing = unit.keyword === "required" ? /required property "([^"]+)"/.exec(unit.error) : null;
    if (missing) {
      path = `${path}.${missing[1]}`;
      message = "is a required property";
    }
    errors.push({ name: unit.keyword, property: path, message, stack: `${path || "."} ${message}`.trim(),
      schemaPath: unit.keywordLocation });
  }
  return errors;
}

export const validator: ValidatorType = {
  validateFormData(formData: unknown, schema: RJSFSchema, customValidate?: CustomValidator,
    transformErrors?: ErrorTransformer, uiSchema?: UiSchema): ValidationData<unknown> {
    let errors = toRjsfErrors(validate(schema, formData));
    if (transformErrors) errors = transformErrors(errors, uiSchema);
    const data: ValidationData<unknown> = { errors, errorSchema: toErrorSchema(errors) };
    if (!customValidate) return data;
    const handler = customValidate(formData, createErrorHandler(formData), uiSchema);
    return validationDataMerge(data, unwrapErrorHandler(handler));
  },
  isValid(schema: RJSFSchema, formData: unknown, rootSchema: RJSFSchema): boolean {
    return validate(schema, formData, rootSchema).length === 0;
  },
  rawValidation<Result = unknown>(schema: RJSFSchema, formData?: unknown) {
    return { errors: validate(schema, formData) as unknown as Result[] };
  },
};
