import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { DEFAULT_THEME } from "../lib/theme";
import { SignIn } from "../pages/SignIn";
import { Errors, Pager, Progress } from "./common";

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
