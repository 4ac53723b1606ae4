import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { DEFAULT_THEME } from "../lib/theme";
import { SignIn } from "../pages/SignIn";
import { BarChart } from "./BarChart";
import { Errors, Pager, Progress, SupportLinks } from "./common";

afterEach(cleanup);

describe("SignIn", () => {
  it("refuses what is neither a key nor a JWT, and sends a key", () => {
    const onSignIn = vi.fn();
    render(<SignIn theme={{ ...DEFAULT_THEME, productName: "Blue Harbour" }} busy={false} errors={[]} onSignIn={onSignIn} />);
    expect(screen.getByTestId("product-name").textContent).toBe("Blue Harbour");
    const box = screen.getByLabelText("API key or JWT");
    fireEvent.change(box, { target: { value: "password123" } });
    fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    expect(onSignIn).not.toHaveBeenCalled();
    expect(screen.getByRole("alert").textContent).toMatch(/API key/);
    const key = `alp_0123456789abcdef_${"k".repeat(43)}`;
    fireEvent.change(box, { target: { value: key } });
    fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    expect(onSignIn).toHaveBeenCalledWith(key);
  });
});

describe("common components", () => {
  it("pages forward by cursor and back through the cursors seen", () => {
    const onPage = vi.fn();
    const { rerender } = render(<Pager pageInfo={{ hasNextPage: true, endCursor: "c1" }} cursors={[null]} onPage={onPage} />);
    expect((screen.getByText("‹ Previous") as HTMLButtonElement).disabled).toBe(true);
    fireEvent.click(screen.getByText("Next ›"));
    expect(onPage).toHaveBeenLastCalledWith([null, "c1"]);
    rerender(<Pager pageInfo={{ hasNextPage: false, endCursor: "c2" }} cursors={[null, "c1"]} onPage={onPage} />);
    expect((screen.getByText("Next ›") as HTMLButtonElement).disabled).toBe(true);
    fireEvent.click(screen.getByText("‹ Previous"));
    expect(onPage).toHaveBeenLastCalledWith([null]);
  });
  it("shows errors with their codes, and progress as a value", () => {
    render(<><Errors errors={[{ code: "COMPLIANCE_KILL_SWITCH", message: "halted", path: "submitOrder" }]} />
      <Progress value={42} label="p" /></>);
    expect(screen.getByRole("alert").textContent).toContain("COMPLIANCE_KILL_SWITCH");
    expect(screen.getByRole("progressbar").getAttribute("aria-valuenow")).toBe("42");
  });
});

describe("bar chart and support links", () => {
  it("draws one bar per backend and series, scaled and clamped, a missing value as no bar", () => {
    const { container } = render(<BarChart label="compare" series={[{ name: "ratio", colour: "red" }, { name: "p", colour: "blue" }]}
      groups={[{ name: "classical-exact", values: [1, null] }, { name: "qaoa", values: [0.5, 0.25] }]} />);
    const bars = Array.from(container.querySelectorAll("rect"));
    expect(bars).toHaveLength(4);
    const heights = bars.map((b) => Number(b.getAttribute("height")));
    expect(heights[1]).toBe(0);
    expect(heights[2]).toBeCloseTo(heights[0] / 2);
    expect(heights[3]).toBeCloseTo(heights[0] / 4);
    expect(screen.getByRole("img", { name: "compare" })).toBeTruthy();
  });
  it("links only https and mailto support pages, opened apart from the console", () => {
    render(<SupportLinks links={[{ label: "Help", url: "https://h.example/help" }, { label: "Bad", url: "javascript:void 0" }]} />);
    const links = screen.getAllByRole("link");
    expect(links).toHaveLength(1);
    expect(links[0].getAttribute("rel")).toBe("noopener noreferrer");
  });
});
