// Plugin configuration forms: the plugin's JSON Schema as @rjsf renders it, with every secret
// field ("x-secret": true, as the marketplace marks them) a password input that never shows a
// stored value back.
export type JsonSchema = Record<string, unknown>;
export type UiSchema = Record<string, unknown>;

/** JSON paths ($.a.b) of the fields marked x-secret, through nested objects. */
export function secretPaths(schema: JsonSchema, prefix = "$"): string[] {
  const found: string[] = [];
  const properties = schema.properties as Record<string, JsonSchema> | undefined;
  if (!properties || typeof properties !== "object") return found;
  for (const [name, sub] of Object.entries(properties)) {
    if (!sub || typeof sub !== "object") continue;
    const path = `${prefix}.${name}`;
    if (sub["x-secret"] === true) found.push(path);
    else if (sub.type === "object") found.push(...secretPaths(sub, path));
  }
  return found;
}

/** The uiSchema that masks each secret path (password widget, autocomplete off). */
export function uiSchemaFor(schema: JsonSchema): UiSchema {
  const ui: UiSchema = {};
  for (const path of secretPaths(schema)) {
    const parts = path.split(".").slice(1);
    let node = ui;
    parts.forEach((part, i) => {
      if (i === parts.length - 1) {
        node[part] = { "ui:widget": "password", "ui:options": { autocomplete: "new-password" },
          "ui:help": "secret: stored encrypted, never shown back" };
      } else {
        node[part] = (node[part] as UiSchema) ?? {};
        node = node[part] as UiSchema;
      }
    });
  }
  return ui;
}

/** The config a form starts from: what the installation shows (secrets are absent there). */
export function withoutSecrets(config: Record<string, unknown>, schema: JsonSchema): Record<string, unknown> {
  const copy: Record<string, unknown> = JSON.parse(JSON.stringify(config ?? {}));
  for (const path of secretPaths(schema)) {
    const parts = path.split(".").slice(1);
    let node: Record<string, unknown> | undefined = copy;
    for (const part of parts.slice(0, -1)) node = node?.[part] as Record<string, unknown> | undefined;
    if (node) delete node[parts[parts.length - 1]];
  }
  return copy;
}
