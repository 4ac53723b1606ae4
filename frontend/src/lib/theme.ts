// White-label theming: the tenant's `whiteLabel` (or, before sign-in, the host's public one)
// becomes CSS variables on <html>. Only #rgb/#rrggbb colours are taken: anything else falls
// back to the default, so a plugin's value can never inject CSS.
export interface WhiteLabel {
  name: string;
  productName: string;
  primaryColour: string;
  secondaryColour: string;
  backgroundColour: string;
  textColour: string;
  logoUrl: string | null;
  supportLinks?: SupportLink[] | null;
  pluginId?: string | null;
}

export interface SupportLink { label: string; url: string }

/** The support links shown: https or mailto URLs with a label, at most eight; nothing else. */
export function safeSupportLinks(links: ReadonlyArray<SupportLink> | null | undefined): SupportLink[] {
  const out: SupportLink[] = [];
  for (const link of links ?? []) {
    if (!link || typeof link.label !== "string" || typeof link.url !== "string" || !link.label.trim()) continue;
    try {
      const parsed = new URL(link.url);
      if ((parsed.protocol === "https:" || parsed.protocol === "mailto:") && !/\s/.test(link.url))
        out.push({ label: link.label.trim(), url: link.url });
    } catch {
      /* not a URL */
    }
  }
  return out.slice(0, 8);
}

export const DEFAULT_THEME: WhiteLabel = {
  name: "alphintra",
  productName: "Alphintra",
  primaryColour: "#0a2540",
  secondaryColour: "#00d4b0",
  backgroundColour: "#ffffff",
  textColour: "#111111",
  logoUrl: null,
};

const HEX = /^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/;

export function colour(value: string | null | undefined, fallback: string): string {
  return value && HEX.test(value) ? value.toLowerCase() : fallback;
}

/** Relative luminance (WCAG) of a #rgb/#rrggbb colour. */
export function luminance(hex: string): number {
  let h = hex.slice(1);
  if (h.length === 3) h = h.split("").map((c) => c + c).join("");
  const [r, g, b] = [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16) / 255)
    .map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

/** Black or white, whichever reads better on `background`. */
export function readableOn(background: string): string {
  return luminance(background) > 0.179 ? "#111111" : "#ffffff";
}

/** An https logo URL or null: nothing else is put in an <img src>. */
export function safeLogo(url: string | null | undefined): string | null {
  if (!url) return null;
  try {
    const parsed = new URL(url);
    return parsed.protocol === "https:" ? parsed.toString() : null;
  } catch {
    return null;
  }
}

export type Mode = "light" | "dark";

export function themeVariables(theme: WhiteLabel, mode: Mode): Record<string, string> {
  const primary = colour(theme.primaryColour, DEFAULT_THEME.primaryColour);
  const secondary = colour(theme.secondaryColour, DEFAULT_THEME.secondaryColour);
  let background = colour(theme.backgroundColour, DEFAULT_THEME.backgroundColour);
  let text = colour(theme.textColour, DEFAULT_THEME.textColour);
  if (mode === "dark") {
    // The brand's colours stay; the page turns dark whatever the light background was.
    background = luminance(background) < 0.1 ? background : "#0f1420";
    text = luminance(text) > 0.5 ? text : "#e8ecf2";
  }
  return {
    "--primary": primary,
    "--on-primary": readableOn(primary),
    "--secondary": secondary,
    "--on-secondary": readableOn(secondary),
    "--bg": background,
    "--text": text,
  };
}

export function applyTheme(theme: WhiteLabel, mode: Mode, root: HTMLElement = document.documentElement): void {
  for (const [name, value] of Object.entries(themeVariables(theme, mode))) root.style.setProperty(name, value);
  root.dataset.mode = mode;
  document.title = theme.productName || DEFAULT_THEME.productName;
}
