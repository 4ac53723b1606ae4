// The signed-in session: credential, who it is, the tenant's white label, the GraphQL client.
import { createContext, useContext } from "react";
import type { WhiteLabel } from "./lib/theme";

export interface Viewer {
  user: { id: string; email: string; displayName: string };
  tenant: { id: string; slug: string; name: string };
  roles: string[];
  authenticatedBy: string;
}

export interface Session {
  credential: string;
  viewer: Viewer;
  theme: WhiteLabel;
  refreshTheme: () => void;
  signOut: () => void;
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error("useSession outside a signed-in console");
  return session;
}

export function hasRole(viewer: Viewer, ...roles: string[]): boolean {
  return viewer.roles.some((r) => roles.includes(r) || r === "admin" || r === "platform_admin");
}
