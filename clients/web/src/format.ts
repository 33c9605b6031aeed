import type { Message } from "../../js/src/index.js";
import { type Key, t } from "./i18n.js";

const KIND_LABELS: Record<string, Key> = { image: "image", file: "file", voice: "voice", video: "video", location: "location", custom: "custom" };

/** One line of text for a message: the conversation list's preview, a quote, a notification. */
export function preview(m: Message | null | undefined, name: (user: string) => string): string {
  if (!m) return "";
  if (m.state === "recalled") return t("recalled");
  if (m.state === "deleted") return t("deleted");
  if (m.state === "hidden") return t("hiddenForMe");
  return bodyText(m.kind, m.body, name);
}

export function bodyText(kind: string, body: Record<string, unknown>, name: (user: string) => string): string {
  if (kind === "text") return String(body["text"] ?? "");
  if (kind === "system") return systemText(body, name);
  if (kind === "merged") return `[${t("merged")}] ${String(body["title"] ?? "")}`.trim();
  if (kind === "react" || kind === "unreact") return `${t("reacted")} ${String(body["emoji"] ?? "")}`;
  if (kind === "recall") return t("recalled");
  if (kind === "delete") return t("deleted");
  if (kind === "edit") return t("editedMessage");
  const label = KIND_LABELS[kind];
  const named = typeof body["name"] === "string" ? ` ${body["name"]}` : "";
  return label ? `${t(label)}${named}` : t("custom");
}

export function systemText(body: Record<string, unknown>, name: (user: string) => string): string {
  const users = Array.isArray(body["users"]) ? (body["users"] as string[]) : [];
  const vars = {
    actor: name(String(body["actor"] ?? "")),
    users: users.map(name).join(", "),
    name: String(body["name"] ?? ""),
    role: String(body["role"] ?? ""),
  };
  switch (body["event"]) {
    case "group_created":
      return t("sys_group_created", vars);
    case "group_updated":
      return t("sys_group_updated", vars);
    case "members_added":
      return t("sys_members_added", vars);
    case "member_removed":
      return t("sys_member_removed", vars);
    case "member_left":
      return t("sys_member_left", vars);
    case "role_changed":
      return t("sys_role_changed", { ...vars, role: roleName(vars.role) });
    default:
      return String(body["event"] ?? "");
  }
}

export function roleName(role: string): string {
  return role === "owner" || role === "admin" || role === "member" ? t(`role_${role}`) : role;
}
